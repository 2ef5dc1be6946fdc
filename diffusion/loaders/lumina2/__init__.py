"""Lumina Image 2.0 models (Lumina-Image-2.0, Neta Lumina): the transformer from a diffusers
transformer/ folder or one original-layout file. Builds on formats/ and keymaps/; imports
neither sd/ nor flow/."""

from .transformer import is_lumina2_file, load_lumina2_transformer, lumina2_file_family

__all__ = ["is_lumina2_file", "load_lumina2_transformer", "lumina2_file_family"]
