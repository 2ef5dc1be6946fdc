"""Wan video models: diffusers folders (`WanPipeline`: transformer/, text_encoder/ UMT5,
tokenizer/, vae/ its causal video VAE, scheduler/). Builds on formats/; imports neither sd/
nor flow/."""

from .folder import WanWeights, load_wan_folder, wan_family

__all__ = ["WanWeights", "load_wan_folder", "wan_family"]
