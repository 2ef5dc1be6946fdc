"""NucleusMoE-Image models: diffusers folders (`NucleusMoEImagePipeline`: transformer/
NucleusMoEImageTransformer2DModel, text_encoder/ Qwen3-VL, processor/ Qwen3-VL's tokenizer,
vae/ Qwen-Image's AutoencoderKLQwenImage, scheduler/). Builds on formats/ and qwen_image/'s
Qwen3-VL readers."""

from .folder import NucleusMoEWeights, load_nucleusmoe_folder, nucleusmoe_family

__all__ = ["NucleusMoEWeights", "load_nucleusmoe_folder", "nucleusmoe_family"]
