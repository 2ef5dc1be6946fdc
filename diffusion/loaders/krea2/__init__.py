"""Krea 2 models: diffusers folders (`Krea2Pipeline`: transformer/ Krea2Transformer2DModel,
text_encoder/ Qwen3-VL-4B's language model, tokenizer/ Qwen's, vae/ Qwen-Image's, scheduler/)
and single-file transformers in Krea's original layout (bf16, fp8, scaled fp8 or GGUF).
Builds on formats/ and qwen_image/'s Qwen readers; imports neither sd/ nor flow/."""

from .file import is_krea2_file, krea2_file_family, load_krea2_file
from .folder import Krea2Weights, krea2_family, load_krea2_folder

__all__ = ["Krea2Weights", "is_krea2_file", "krea2_family", "krea2_file_family",
           "load_krea2_file", "load_krea2_folder"]
