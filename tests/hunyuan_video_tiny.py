"""A tiny random HunyuanVideo (1.0) transformer (diffusers' HunyuanVideoTransformer3DModel)
and a tiny Llama (transformers' LlamaModel, llava-llama-3-8b's language model) built
in-process: the references of the model tests, and the pipeline tests' transformer and text
encoder (`write_hunyuan_video_transformer` saves the transformer as a diffusers
`transformer/` folder), and the transformer's tensors in Tencent's original layout
(`original_video_layout`: diffusers' converter's table read backwards)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from hunyuanimage_tiny import original_layout
from sd_tiny import CLIP_TINY, randomized

# 4 latent channels (tests/hunyuan_video_vae_tiny.py's VAE) in 1 x 2 x 2 patches (the real
# model's), 4 out. The text as the tiny Llama's 40-wide states (LLAMA_TINY's hidden size), the
# pooled CLIP projection 32 wide (CLIP_TINY's hidden size). Head dim 16 = the rotary axes
# 4 + 6 + 6 (frames, rows, columns); the distilled guidance embedding as the real model's.
HUNYUAN_VIDEO_TINY: dict[str, Any] = dict(
    in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16,
    num_layers=2, num_single_layers=2, num_refiner_layers=2, mlp_ratio=4.0, patch_size=2,
    patch_size_t=1, guidance_embeds=True, text_embed_dim=40,
    pooled_projection_dim=CLIP_TINY["hidden_size"], rope_axes_dim=(4, 6, 6))

# llava-llama-3-8b's language model in small: Llama 3's rope base, grouped-query attention,
# 4 layers so that the pipeline's hidden_states[-3] (num_hidden_layers_to_skip 2) is a middle
# one. Its rope has no scaling (Meta-Llama-3-8B's config), LLAMA3_ROPE is Llama 3.1's
# "llama3" scaling with the original context shortened to 16 so that a tiny prompt's
# positions reach the scaled and the smoothed frequencies.
LLAMA_TINY: dict[str, Any] = dict(
    vocab_size=320, hidden_size=40, intermediate_size=56, num_hidden_layers=4,
    num_attention_heads=4, num_key_value_heads=2, head_dim=10, rms_norm_eps=1e-5,
    max_position_embeddings=1024, rope_theta=500_000.0, tie_word_embeddings=False,
    bos_token_id=1, eos_token_id=2, pad_token_id=0)
LLAMA3_ROPE: dict[str, Any] = dict(
    rope_type="llama3", rope_theta=500_000.0, factor=8.0, low_freq_factor=1.0,
    high_freq_factor=4.0, original_max_position_embeddings=16)


def tiny_hunyuan_video_transformer(seed: int = 41, **overrides: Any) -> Any:
    """diffusers' HunyuanVideoTransformer3DModel of HUNYUAN_VIDEO_TINY (with `overrides`, e.g.
    guidance_embeds=False or another `in_channels`), random weights scaled so that the text
    and the pooled CLIP projection each visibly matter (on 3 x 6 x 10 latents with 7 and 4
    of 9 text tokens, new random text states move the velocity by 8% of its mean size, a new
    pooled projection by 24%, the timestep 700 -> 300 by 27%, the guidance 6000 -> 1000 by
    30%; tests/diffusion/models/test_hunyuan_video_transformer.py asserts it)."""
    import diffusers

    return randomized(diffusers.HunyuanVideoTransformer3DModel(
        **{**HUNYUAN_VIDEO_TINY, **overrides}), seed, scale=0.3)


def write_hunyuan_video_transformer(folder: Path, seed: int = 41, **overrides: Any) -> Any:
    """tiny_hunyuan_video_transformer's model saved by diffusers into `folder` (a pipeline
    folder's `transformer/`: config.json and diffusion_pytorch_model.safetensors); returns
    the model."""
    model = tiny_hunyuan_video_transformer(seed, **overrides)
    model.save_pretrained(folder)
    return model


def tiny_llama(seed: int = 43, **overrides: Any) -> Any:
    """transformers' LlamaModel of LLAMA_TINY (with `overrides`, e.g.
    `rope_parameters=LLAMA3_ROPE`), random weights."""
    import transformers

    return randomized(transformers.LlamaModel(transformers.LlamaConfig(
        **{**LLAMA_TINY, **overrides})), seed, scale=0.6)


# HunyuanVideo's own tensors, diffusers -> original; the rest is HunyuanImage 2.1's table
_NAMES = (
    (r"time_text_embed\.timestep_embedder\.linear_1", "time_in.mlp.0"),
    (r"time_text_embed\.timestep_embedder\.linear_2", "time_in.mlp.2"),
    (r"time_text_embed\.guidance_embedder\.linear_1", "guidance_in.mlp.0"),
    (r"time_text_embed\.guidance_embedder\.linear_2", "guidance_in.mlp.2"),
    (r"time_text_embed\.text_embedder\.linear_1", "vector_in.in_layer"),
    (r"time_text_embed\.text_embedder\.linear_2", "vector_in.out_layer"),
)


def original_video_layout(state: dict[str, np.ndarray], *, fused: bool, prefix: str = ""
                          ) -> dict[str, np.ndarray]:
    """diffusers' tensors in Tencent's layout; `fused`: the double blocks' q/k/v and the
    single blocks' linear1 stacked (the release's form)."""
    return original_layout(state, fused=fused, prefix=prefix, names=_NAMES)
