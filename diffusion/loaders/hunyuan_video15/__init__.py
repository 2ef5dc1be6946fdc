"""HunyuanVideo 1.5's weights. Builds on formats/ only."""

from .vae import load_hunyuan_video15_vae

__all__ = ["load_hunyuan_video15_vae"]
