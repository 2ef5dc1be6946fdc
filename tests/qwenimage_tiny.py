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
