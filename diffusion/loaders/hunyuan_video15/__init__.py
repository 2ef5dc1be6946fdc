"""HunyuanVideo 1.5 models: the transformer from a diffusers folder's transformer/ or Tencent's
original release (`transformer`), the VAE from a diffusers folder's vae/ (`vae`). Builds on
formats/ and keymaps/."""

from .vae import load_hunyuan_video15_vae

__all__ = ["load_hunyuan_video15_vae"]
