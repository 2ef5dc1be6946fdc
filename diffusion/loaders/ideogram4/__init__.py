"""Ideogram 4 models: diffusers folders (`Ideogram4Pipeline`: transformer/ and
unconditional_transformer/ Ideogram4Transformer2DModel, text_encoder/ Qwen3-VL, tokenizer/
Qwen's, vae/ FLUX.2's AutoencoderKLFlux2, scheduler/). Builds on formats/ and qwen_image/'s
Qwen3-VL readers."""

from .folder import Ideogram4Weights, ideogram4_family, load_ideogram4_folder

__all__ = ["Ideogram4Weights", "ideogram4_family", "load_ideogram4_folder"]
