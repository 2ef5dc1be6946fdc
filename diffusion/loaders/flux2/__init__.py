"""FLUX.2 klein models: diffusers folders (`Flux2KleinPipeline`: transformer/, text_encoder/
Qwen3, tokenizer/, vae/ FLUX.2's 32-channel VAE, scheduler/). Builds on formats/;
imports neither sd/ nor flow/."""

from .folder import Flux2Weights, flux2_distilled, flux2_family, load_flux2_folder

__all__ = ["Flux2Weights", "flux2_distilled", "flux2_family", "load_flux2_folder"]
