"""Qwen-Image models: diffusers folders (`QwenImagePipeline`: transformer/, text_encoder/
Qwen2.5-VL, tokenizer/, vae/ its 16-channel causal VAE, scheduler/) and single-file
transformers as ComfyUI users have them (its split diffusion model file, bf16 or fp8, and
GGUFs of it). Builds on formats/ and keymaps/; imports neither sd/ nor flow/."""

from .file import is_qwenimage_file, load_qwenimage_file, qwenimage_file_family
from .folder import (
    QwenImageWeights,
    language_model_config,
    load_qwenimage_folder,
    qwenimage_edit_family,
    qwenimage_family,
)

__all__ = ["QwenImageWeights", "is_qwenimage_file", "language_model_config",
           "load_qwenimage_file", "load_qwenimage_folder", "qwenimage_edit_family",
           "qwenimage_family",
           "qwenimage_file_family"]
