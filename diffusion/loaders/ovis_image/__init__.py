"""Ovis-Image models: diffusers folders (`OvisImagePipeline`: transformer/
OvisImageTransformer2DModel, text_encoder/ Qwen3, tokenizer/ Qwen's, vae/ FLUX.1's
AutoencoderKL, scheduler/). Builds on formats/ and qwen_image/'s tokenizer check."""

from .folder import OvisImageWeights, load_ovis_image_folder, ovis_image_family

__all__ = ["OvisImageWeights", "load_ovis_image_folder", "ovis_image_family"]
