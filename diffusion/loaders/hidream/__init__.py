"""HiDream-I1 models (Full, Dev, Fast): the transformer from a diffusers transformer/
folder or one original file. Builds on formats/ and keymaps/; imports neither sd/ nor
flow/."""

from .transformer import hidream_file_family, is_hidream_file, load_hidream_transformer

__all__ = ["hidream_file_family", "is_hidream_file", "load_hidream_transformer"]
