"""Tiny random Sana Video transformers built in-process: diffusers'
SanaVideoTransformer3DModel shrunk, kept in memory as references and written as diffusers
folders for loader and pipeline tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sd_tiny import randomized

# SANA-Video 2B's layout shrunk: 4 latent channels (Wan 2.1's 16) in 1 x 2 x 2 patches, two
# blocks of 2 heads of 12 (Wan's rotary split 4 + 4 + 4 features: frame, row, column),
# captions of 20 features (Gemma 2's 2304), GLUMBTempConv's inner width int(2.5 * 24) = 60
SANA_VIDEO_TINY: dict[str, Any] = dict(
    in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=2,
    num_cross_attention_heads=2, cross_attention_head_dim=12, cross_attention_dim=24,
    caption_channels=20, mlp_ratio=2.5, attention_bias=False, sample_size=8,
    patch_size=(1, 2, 2), qk_norm="rms_norm_across_heads", rope_max_seq_len=64)


def tiny_sana_video_transformer(seed: int = 29, **overrides: Any) -> Any:
    """diffusers' SanaVideoTransformer3DModel of SANA_VIDEO_TINY, random weights scaled so
    that the caption and the neighbouring frames visibly matter (the tests assert it)."""
    import diffusers
    import torch

    model = randomized(diffusers.SanaVideoTransformer3DModel(**{**SANA_VIDEO_TINY,
                                                                **overrides}), seed, scale=0.4)
    # the cross-attention writes to the stream ungated: tripled, as in sana_tiny
    with torch.no_grad():
        for block in model.transformer_blocks:
            block.attn2.to_out[0].weight.mul_(3.0)
    return model


def write_sana_video_transformer(folder: Path, seed: int = 29, **overrides: Any) -> Any:
    """tiny_sana_video_transformer's model saved by diffusers into `folder` (a pipeline
    folder's `transformer/`); returns the model."""
    model = tiny_sana_video_transformer(seed, **overrides)
    model.save_pretrained(folder)
    return model
