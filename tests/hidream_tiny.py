"""A tiny random HiDream-I1 transformer built in-process: diffusers'
HiDreamImageTransformer2DModel, kept in memory as the reference and written as a diffusers
folder for loader and pipeline tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sd_tiny import randomized

# 4 latent channels in 2 x 2 patches; 4 heads of 8 (the rotary axes 4 + 2 + 2 fill a head);
# two double-stream and two single-stream blocks, each with the MoE feed-forward of 4 routed
# experts, top 2 (HiDream-I1's); T5 states 24 wide, Llama states 20 wide, pooled CLIP 16;
# a stack of 3 Llama layers read in a shuffled order (the last one, 2, also joins the T5
# text); max_resolution 8 x 8 latents: 16 patches, the length a non-square picture is padded to
HIDREAM_TINY: dict[str, Any] = dict(
    patch_size=2, in_channels=4, out_channels=4, num_layers=2, num_single_layers=2,
    attention_head_dim=8, num_attention_heads=4, caption_channels=[24, 20], text_emb_dim=16,
    num_routed_experts=4, num_activated_experts=2, axes_dims_rope=(4, 2, 2),
    max_resolution=(8, 8), llama_layers=[0, 2, 1, 2])
LLAMA_LAYERS = 3  # the Llama stack's depth HIDREAM_TINY's llama_layers index into


def tiny_hidream_transformer(seed: int = 23, **overrides: Any) -> Any:
    """diffusers' HiDreamImageTransformer2DModel of HIDREAM_TINY, random weights scaled so
    that the T5 text, the Llama states and the pooled embedding each visibly matter and the
    gate routes tokens to different experts (the tests assert it)."""
    import diffusers

    return randomized(diffusers.HiDreamImageTransformer2DModel(**{**HIDREAM_TINY, **overrides}),
                      seed, scale=0.4)


def write_hidream_transformer(folder: Path, seed: int = 23, **overrides: Any) -> Any:
    """tiny_hidream_transformer's model saved by diffusers into `folder` (a pipeline
    folder's `transformer/`); returns the model."""
    model = tiny_hidream_transformer(seed, **overrides)
    model.save_pretrained(folder)
    return model
