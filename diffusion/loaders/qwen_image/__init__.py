"""Qwen-Image models: diffusers folders (`QwenImagePipeline`: transformer/, text_encoder/
Qwen2.5-VL, tokenizer/, vae/ its 16-channel causal VAE, scheduler/; Qwen-Image 2.1's
`QwenImage21Pipeline` with Qwen3-VL and a 64-channel VAE) and single-file
transformers as ComfyUI users have them (its split diffusion model file, bf16 or fp8, and
GGUFs of it; Qwen-Image 2.1's too, file21). Builds on formats/ and keymaps/; imports neither
sd/ nor flow/."""

from .file import (
    is_qwenimage_file,
    load_qwenimage_file,
    qwenimage_edit_file_family,
    qwenimage_file_family,
)
from .file21 import is_qwenimage21_file, load_qwenimage21_file, qwenimage21_file_family
from .folder import (
    QwenImageWeights,
    language_model_config,
    language_model_refs,
    load_qwenimage_folder,
    qwenimage_edit_family,
    qwenimage_family,
    qwenimage_layered_family,
)
from .folder21 import (
    QwenImage21Weights,
    load_qwenimage21_folder,
    qwen3_vl_text_config,
    qwenimage21_family,
)

__all__ = ["QwenImage21Weights", "QwenImageWeights", "is_qwenimage21_file",
           "is_qwenimage_file", "language_model_config", "language_model_refs",
           "load_qwenimage21_file", "load_qwenimage21_folder", "load_qwenimage_file",
           "load_qwenimage_folder", "qwen3_vl_text_config", "qwenimage21_family",
           "qwenimage21_file_family", "qwenimage_edit_family", "qwenimage_edit_file_family",
           "qwenimage_family", "qwenimage_file_family", "qwenimage_layered_family"]
