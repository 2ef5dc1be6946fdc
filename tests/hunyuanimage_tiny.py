"""A tiny random HunyuanImage 2.1 transformer built in-process (diffusers), kept in memory as
the reference and written as a diffusers `transformer/` folder for loader and pipeline
tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sd_tiny import randomized

# 8 latent channels in 1 x 1 patches (HunyuanImage 2.1's patch size; its real VAE gives 64);
# the text as the tiny Qwen2.5-VL's 40-wide states (QWEN3_TINY's hidden size), the glyph
# text as a 32-wide ByT5 (T5_TINY's d_model). Head dim 16 = the rotary axes 8 + 8 (rows,
# columns). ByT5's projection keeps diffusers' fixed 2048-wide hidden layer.
HUNYUANIMAGE_TINY: dict[str, Any] = dict(
    in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=16,
    num_layers=2, num_single_layers=2, num_refiner_layers=2, mlp_ratio=4.0,
    patch_size=(1, 1), text_embed_dim=40, text_embed_2_dim=32, rope_axes_dim=(8, 8))
# the distilled checkpoint's switches: a guidance-scale embedding and meanflow's timestep_r
HUNYUANIMAGE_DISTILLED: dict[str, Any] = dict(guidance_embeds=True, use_meanflow=True)


def tiny_hunyuanimage_transformer(seed: int = 22, **overrides: Any) -> Any:
    """diffusers' HunyuanImageTransformer2DModel of HUNYUANIMAGE_TINY (with `overrides`, e.g.
    `**HUNYUANIMAGE_DISTILLED` or another `in_channels`), random weights scaled so the text
    and the glyph text visibly matter (on a 5 x 7 latent with 6 text and 3 glyph tokens,
    new random text states move the flow by 9% of its mean size, new glyph states by 3%, the
    timestep 700 -> 300 by 100%)."""
    import diffusers

    return randomized(diffusers.HunyuanImageTransformer2DModel(
        **{**HUNYUANIMAGE_TINY, **overrides}), seed, scale=0.3)


def write_hunyuanimage_transformer(folder: Path, seed: int = 22, **overrides: Any) -> Any:
    """tiny_hunyuanimage_transformer's model saved by diffusers into `folder` (a pipeline
    folder's `transformer/`: config.json and diffusion_pytorch_model.safetensors); returns
    the model."""
    model = tiny_hunyuanimage_transformer(seed, **overrides)
    model.save_pretrained(folder)
    return model
