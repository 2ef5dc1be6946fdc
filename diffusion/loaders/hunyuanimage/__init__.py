"""HunyuanImage 2.1 models: the transformer from a diffusers folder's transformer/ or
Tencent's original single file. Builds on formats/ and keymaps/; imports neither sd/ nor
flow/."""

from .transformer import is_hunyuanimage_file, load_hunyuanimage_transformer

__all__ = ["is_hunyuanimage_file", "load_hunyuanimage_transformer"]
