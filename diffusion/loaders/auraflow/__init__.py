"""AuraFlow models: diffusers folders (`AuraFlowPipeline`: transformer/
AuraFlowTransformer2DModel, text_encoder/ UMT5 (EleutherAI's Pile-T5 XL), tokenizer/, vae/
SDXL's AutoencoderKL, scheduler/). Builds on formats/."""

from .folder import AuraFlowWeights, auraflow_family, load_auraflow_folder, pad_token

__all__ = ["AuraFlowWeights", "auraflow_family", "load_auraflow_folder", "pad_token"]
