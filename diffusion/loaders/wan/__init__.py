"""Wan video models: diffusers folders (`WanPipeline`: transformer/, text_encoder/ UMT5,
tokenizer/, vae/ its causal video VAE, scheduler/; Wan 2.2 A14B's transformer_2/) and
single-file transformers as ComfyUI users have them (its split diffusion model files, bf16,
fp8 or fp8 scaled, and GGUFs of them). Builds on formats/ and keymaps/; imports neither sd/
nor flow/."""

from .file import is_wan_file, load_wan_file, wan_file_family
from .files import WanFiles, load_wan
from .folder import WanWeights, load_wan_folder, wan_family

__all__ = ["WanFiles", "WanWeights", "is_wan_file", "load_wan", "load_wan_file",
           "load_wan_folder", "wan_family", "wan_file_family"]
