"""FLUX.2 models: diffusers folders (klein's `Flux2KleinPipeline`: transformer/, text_encoder/
Qwen3, tokenizer/, vae/ FLUX.2's 32-channel VAE, scheduler/; dev's `Flux2Pipeline`, Mistral
Small 3.1 its text encoder) and single-file transformers in Black Forest Labs' layout
(ComfyUI's, GGUFs of it). Builds on formats/ and keymaps/; imports
neither sd/ nor flow/."""

from .file import flux2_file_family, is_flux2_file, load_flux2_file
from .folder import (
    Flux2Weights,
    flux2_distilled,
    flux2_family,
    load_flux2_folder,
    mistral3_text,
)

__all__ = ["Flux2Weights", "flux2_distilled", "flux2_family", "flux2_file_family",
           "is_flux2_file", "load_flux2_file", "load_flux2_folder", "mistral3_text"]
