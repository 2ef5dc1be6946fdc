"""HunyuanVideo 1.5 models: the transformer from a diffusers folder's transformer/ or Tencent's
original release (`transformer`), the VAE from a diffusers folder's vae/ (`vae`), and the
diffusers folders of the text-to-video and image-to-video pipelines (`folder`). Builds on
formats/ and keymaps/."""

from .folder import (
    HunyuanVideo15Weights,
    hunyuan_video15_family,
    hunyuan_video15_image_to_video,
    load_hunyuan_video15_folder,
)
from .vae import load_hunyuan_video15_vae

__all__ = ["HunyuanVideo15Weights", "hunyuan_video15_family", "hunyuan_video15_image_to_video",
           "load_hunyuan_video15_folder", "load_hunyuan_video15_vae"]
