"""Tiny random HunyuanImage 2.1 parts other than the transformer (tests/hunyuanimage_tiny.py
has that), built in-process: its VAE, the ByT5 glyph encoder and its tokenizer, Qwen2.5-VL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sd_tiny import randomized

HYVAE_TINY: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(32, 64, 64),
    layers_per_block=1, spatial_compression_ratio=4, sample_size=64, scaling_factor=0.75)
# ByT5's vocabulary (3 specials, 256 bytes, 125 sentinels) over a tiny T5 v1.1 encoder
BYT5_TINY: dict[str, Any] = dict(
    vocab_size=384, d_model=32, d_kv=8, d_ff=40, num_layers=2, num_heads=4,
    feed_forward_proj="gated-gelu", relative_attention_num_buckets=8,
    relative_attention_max_distance=20, dropout_rate=0.0)


def tiny_hyvae(seed: int = 5) -> Any:
    """diffusers' AutoencoderKLHunyuanImage of HYVAE_TINY (4x compression), random."""
    import diffusers

    return randomized(diffusers.AutoencoderKLHunyuanImage(**HYVAE_TINY), seed)


def tiny_byt5(seed: int = 6) -> Any:
    """transformers' T5EncoderModel of BYT5_TINY, random."""
    import transformers

    return randomized(transformers.T5EncoderModel(transformers.T5Config(**BYT5_TINY)), seed)


def byt5_tokenizer(folder: Path | None = None) -> Any:
    """transformers' ByT5Tokenizer (saved to `folder` when given)."""
    import transformers

    tokenizer = transformers.ByT5Tokenizer()
    if folder is not None:
        tokenizer.save_pretrained(folder)
    return tokenizer
