"""Tiny random Krea 2 text-encoder parts built in-process (transformers, tokenizers): Qwen3-VL's
Qwen3VLModel of qwen3vl_tiny's language model, and zimage_tiny's Qwen-shaped tokenizer with the
words of Krea 2's template added as whole tokens, so that the template splits as Qwen3-VL's
real tokenizer splits it (34 prefix tokens, 5 suffix tokens), which Krea2Pipeline counts on."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from qwen3vl_tiny import QWEN3VL_TEXT
from sd_tiny import randomized
from zimage_tiny import QWEN3_TINY, tiny_qwen_tokenizer_with

# Qwen's BPE holds each of these as one token; the tiny one, 300 tokens in all, cannot learn
# them, so they are added tokens (matched longest first: " texture" before " text")
TEMPLATE_WORDS = ["system", "user", "assistant", "Describe", " the", " image", " by",
                  " detailing", " color", " shape", " size", " texture", " quantity", " text",
                  " spatial", " relationships", " of", " objects", " and", " background"]


def tiny_krea2_tokenizer(folder: Path) -> Path:
    """tiny_qwen_tokenizer's with TEMPLATE_WORDS after its own, in `folder`."""
    return tiny_qwen_tokenizer_with(folder, TEMPLATE_WORDS)


@functools.cache
def tiny_krea2_text_encoder(layers: int = 4, seed: int = 3) -> Any:
    """transformers' Qwen3VLModel (Krea2Pipeline's text_encoder) with QWEN3VL_TEXT's language
    model `layers` deep and a one-block vision tower no prompt uses, random weights (made
    once)."""
    import transformers

    vision = dict(depth=1, hidden_size=16, intermediate_size=24, num_heads=2,
                  out_hidden_size=QWEN3_TINY["hidden_size"], deepstack_visual_indexes=[0],
                  num_position_embeddings=16)
    config = transformers.Qwen3VLConfig(
        text_config={**QWEN3VL_TEXT, "num_hidden_layers": layers}, vision_config=vision,
        image_token_id=QWEN3_TINY["vocab_size"] - 1)
    return randomized(transformers.Qwen3VLModel(config), seed).eval()
