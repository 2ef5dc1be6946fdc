"""Qwen-Image models: diffusers folders (`QwenImagePipeline`: transformer/, text_encoder/
Qwen2.5-VL, tokenizer/, vae/ its 16-channel causal VAE, scheduler/). Builds on formats/;
imports neither sd/ nor flow/."""

from .folder import QwenImageWeights, language_model_config, load_qwenimage_folder, qwenimage_family

__all__ = ["QwenImageWeights", "language_model_config", "load_qwenimage_folder",
           "qwenimage_family"]
