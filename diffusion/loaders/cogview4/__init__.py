"""CogView4 models: diffusers folders (`CogView4Pipeline`: transformer/
CogView4Transformer2DModel, text_encoder/ GLM-4-9B as transformers' GlmModel, tokenizer/
GLM's tokenizer.json, vae/ a 16-channel AutoencoderKL, scheduler/). Builds on formats/."""

from .folder import cogview4_family, load_cogview4_folder

__all__ = ["cogview4_family", "load_cogview4_folder"]
