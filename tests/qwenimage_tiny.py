"""Tiny random Qwen-Image components built in-process (diffusers, transformers): a Qwen-Image
transformer and a Qwen-Image VAE."""

from __future__ import annotations

from typing import Any

from sd_tiny import randomized

QWENIMAGE_TINY: dict[str, Any] = dict(
    patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16,
    num_attention_heads=3, joint_attention_dim=40, axes_dims_rope=(4, 6, 6))


def tiny_qwenimage_transformer(seed: int = 7) -> Any:
    """diffusers' QwenImageTransformer2DModel of QWENIMAGE_TINY, random weights scaled so the
    text visibly matters."""
    import diffusers

    return randomized(diffusers.QwenImageTransformer2DModel(**QWENIMAGE_TINY), seed, scale=0.3)


QWENIMAGE_VAE_TINY: dict[str, Any] = dict(
    base_dim=8, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[False, True],
    latents_mean=[0.3, -0.2, 0.1, 0.5], latents_std=[1.5, 0.8, 2.0, 1.1])


def tiny_qwenimage_vae(seed: int = 5) -> Any:
    """diffusers' AutoencoderKLQwenImage of QWENIMAGE_VAE_TINY (4x downsampling), random."""
    import diffusers

    return randomized(diffusers.AutoencoderKLQwenImage(**QWENIMAGE_VAE_TINY), seed)
