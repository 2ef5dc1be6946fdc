"""Lumina Image 2.0 models (and fine-tunes such as Neta Lumina): diffusers folders
(`Lumina2Pipeline`: transformer/, text_encoder/ Gemma 2, tokenizer/, vae/ FLUX's 16-channel
VAE, scheduler/). Builds on formats/; imports neither sd/ nor flow/."""

from .folder import Lumina2Weights, load_lumina2_folder, lumina2_family

__all__ = ["Lumina2Weights", "load_lumina2_folder", "lumina2_family"]
