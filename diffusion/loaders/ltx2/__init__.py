"""LTX-2's components: a diffusers folder's, or the single release checkpoint's.
Builds on formats/ only."""

from .vae import load_ltx2_vae

__all__ = ["load_ltx2_vae"]
