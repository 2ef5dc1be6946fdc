"""HunyuanVideo's VAE (diffusers' AutoencoderKLHunyuanVideo), which Kandinsky 5's video
models decode with: a diffusers folder's vae/, or the original release's single file; and
HunyuanVideo (1.0)'s transformer: a diffusers folder's transformer/, or Tencent's original
single file. Builds on formats/ and keymaps/ only."""

from .transformer import is_hunyuan_video_file, load_hunyuan_video_transformer
from .vae import load_hunyuan_video_vae

__all__ = ["is_hunyuan_video_file", "load_hunyuan_video_transformer", "load_hunyuan_video_vae"]
