"""Krea 2 models: diffusers folders (`Krea2Pipeline`: transformer/ Krea2Transformer2DModel,
text_encoder/ Qwen3-VL-4B's language model, tokenizer/ Qwen's, vae/ Qwen-Image's, scheduler/).
Builds on formats/ and qwen_image/'s Qwen readers; imports neither sd/ nor flow/."""

from .folder import Krea2Weights, krea2_family, load_krea2_folder

__all__ = ["Krea2Weights", "krea2_family", "load_krea2_folder"]
