"""HunyuanVideo's VAE (diffusers' AutoencoderKLHunyuanVideo), which Kandinsky 5's video
models decode with: a diffusers folder's vae/, or the original release's single file.
Builds on formats/ only."""

from .vae import load_hunyuan_video_vae

__all__ = ["load_hunyuan_video_vae"]
