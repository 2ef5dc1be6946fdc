"""Sana models (Sana 1.0/1.5, Sana Sprint): the transformer from a diffusers transformer/
folder or one original-layout file (NVIDIA's .pth, or a .safetensors). Builds on formats/ and
keymaps/; imports neither sd/ nor flow/."""

from .transformer import is_sana_file, load_sana_transformer, sana_file_family

__all__ = ["is_sana_file", "load_sana_transformer", "sana_file_family"]
