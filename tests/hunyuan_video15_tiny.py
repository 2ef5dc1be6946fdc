"""A tiny random HunyuanVideo 1.5 transformer (diffusers' HunyuanVideo15Transformer3DModel)
built in-process: the reference of the model's tests, and the pipeline tests' transformer
(`write_hunyuan_video15_transformer` saves it as a diffusers `transformer/` folder), and its
tensors in Tencent's original layout (`original_video15_layout`: diffusers' converter's table
read backwards)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from hunyuanimage_tiny import original_layout
from sd_tiny import randomized

# 9 input channels = 4 latent channels (tests/hunyuan_video15_vae_tiny.py's VAE) + their
# 4 condition channels + the condition mask, as the pipelines concatenate them (the real
# model: 32 + 32 + 1 = 65); 4 out. The text as the tiny Qwen2.5-VL's 40-wide states
# (QWEN3_TINY's hidden size), the glyph text as a 32-wide ByT5 (BYT5_TINY's d_model), the
# image as 24-wide SigLIP states. Head dim 16 = the rotary axes 4 + 6 + 6 (frames, rows,
# columns). ByT5's projection keeps diffusers' fixed 2048-wide hidden layer.
HUNYUAN_VIDEO15_TINY: dict[str, Any] = dict(
    in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=16,
    num_layers=2, num_refiner_layers=2, mlp_ratio=4.0, patch_size=1, patch_size_t=1,
    text_embed_dim=40, text_embed_2_dim=32, image_embed_dim=24, rope_axes_dim=(4, 6, 6))
# the 1080p super-resolution checkpoints' switch: meanflow's timestep_r embedding
HUNYUAN_VIDEO15_MEANFLOW: dict[str, Any] = dict(use_meanflow=True)


def tiny_hunyuan_video15_transformer(seed: int = 31, **overrides: Any) -> Any:
    """diffusers' HunyuanVideo15Transformer3DModel of HUNYUAN_VIDEO15_TINY (with
    `overrides`, e.g. another `in_channels` or `image_embed_dim`), random weights scaled so
    that the text, the glyph text and the image states each visibly matter (on 3 x 6 x 10
    latents with 7 of 9 text, 3 of 5 glyph and 4 image tokens, new random text states move
    the velocity by 5% of its mean size, new glyph states by 2%, new image states by 8%,
    the timestep 700 -> 300 by 68%)."""
    import diffusers

    return randomized(diffusers.HunyuanVideo15Transformer3DModel(
        **{**HUNYUAN_VIDEO15_TINY, **overrides}), seed, scale=0.3)


def write_hunyuan_video15_transformer(folder: Path, seed: int = 31, **overrides: Any) -> Any:
    """tiny_hunyuan_video15_transformer's model saved by diffusers into `folder` (a pipeline
    folder's `transformer/`: config.json and diffusion_pytorch_model.safetensors); returns
    the model."""
    model = tiny_hunyuan_video15_transformer(seed, **overrides)
    model.save_pretrained(folder)
    return model


# HunyuanVideo 1.5's own tensors, diffusers -> original; the rest is HunyuanImage 2.1's table
_NAMES = (
    (r"time_embed\.timestep_embedder\.linear_1", "time_in.mlp.0"),
    (r"time_embed\.timestep_embedder\.linear_2", "time_in.mlp.2"),
    (r"time_embed\.timestep_embedder_r\.linear_1", "time_r_in.mlp.0"),
    (r"time_embed\.timestep_embedder_r\.linear_2", "time_r_in.mlp.2"),
    (r"image_embedder\.norm_in", "vision_in.proj.0"),
    (r"image_embedder\.linear_1", "vision_in.proj.1"),
    (r"image_embedder\.linear_2", "vision_in.proj.3"),
    (r"image_embedder\.norm_out", "vision_in.proj.4"),
    (r"cond_type_embed", "cond_type_embedding"),
)


def original_video15_layout(state: dict[str, np.ndarray], *, fused: bool, prefix: str = ""
                            ) -> dict[str, np.ndarray]:
    """diffusers' tensors in Tencent's layout; `fused`: the double blocks' q/k/v stacked."""
    return original_layout(state, fused=fused, prefix=prefix, names=_NAMES)
