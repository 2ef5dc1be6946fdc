"""Wan video models: diffusers folders (`WanPipeline`: transformer/, text_encoder/ UMT5,
tokenizer/, vae/ its causal video VAE, scheduler/; Wan 2.2 A14B's transformer_2/) and
single-file transformers as ComfyUI users have them (its split diffusion model files, bf16,
fp8 or fp8 scaled, and GGUFs of them), with the other parts' files (UMT5, CLIP vision, the
Wan 2.1 and 2.2 VAEs) beside a `--base` folder; `sources` checks what a user named, for the
command line and the server alike. Builds on formats/ and keymaps/; imports neither sd/ nor
flow/."""

from .file import is_wan_file, load_wan_file, wan_file_family
from .files import WanFiles, load_wan
from .folder import WanWeights, chronoedit_family, load_wan_folder, wan_family
from .sources import WanSource, resolve_wan

__all__ = ["WanFiles", "WanSource", "WanWeights", "chronoedit_family", "is_wan_file", "load_wan",
           "load_wan_file", "load_wan_folder", "resolve_wan", "wan_family", "wan_file_family"]
