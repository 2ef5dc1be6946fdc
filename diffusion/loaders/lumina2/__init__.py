"""Lumina Image 2.0 models (Lumina-Image-2.0, Neta Lumina): diffusers folders
(`Lumina2Pipeline`: transformer/, text_encoder/ Gemma 2, tokenizer/, vae/ FLUX's 16-channel
VAE, scheduler/), and the transformer from a diffusers transformer/ folder or one
original-layout file. Builds on formats/ and keymaps/; imports neither sd/ nor flow/."""

from .folder import Lumina2Weights, load_lumina2_folder, lumina2_family
from .transformer import is_lumina2_file, load_lumina2_transformer, lumina2_file_family

__all__ = ["Lumina2Weights", "is_lumina2_file", "load_lumina2_folder", "load_lumina2_transformer",
           "lumina2_family", "lumina2_file_family"]
