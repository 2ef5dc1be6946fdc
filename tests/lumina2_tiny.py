"""Tiny random Lumina Image 2.0 parts built in-process: diffusers' Lumina2Transformer2DModel
and transformers' Gemma2Model (its text encoder), kept in memory as references and written as
diffusers / transformers folders for pipeline tests to load."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from sd_tiny import randomized

# Gemma 2's layers: local / global / local (its alternating pattern, a small window), no q/k
# norms, scores scaled by query_pre_attn_scalar and soft-capped at 2 (Gemma-2-2B's 50 never
# binds on tiny random scores: 2 does, so the cap visibly matters); a rotary base small
# enough that positions visibly turn
GEMMA2_TINY: dict[str, Any] = dict(
    vocab_size=160, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=16,
    sliding_window=24, attn_logit_softcapping=2.0,
    rope_parameters={"rope_type": "default", "rope_theta": 100.0},
    pad_token_id=0, eos_token_id=1, bos_token_id=2)

# 16 latent channels (Lumina 2's FLUX.1 VAE's) in 2 x 2 patches; grouped-query attention (4
# query heads for 2 key/value heads), head dim 12 = the rotary axes 4 + 4 + 4; captions
# GEMMA2_TINY's 32-wide states; two refiner blocks each side and two joint blocks
LUMINA2_TINY: dict[str, Any] = dict(
    sample_size=16, patch_size=2, in_channels=16, hidden_size=48, num_layers=2,
    num_refiner_layers=2, num_attention_heads=4, num_kv_heads=2, multiple_of=16,
    norm_eps=1e-5, axes_dim_rope=(4, 4, 4), axes_lens=(64, 32, 32),
    cap_feat_dim=GEMMA2_TINY["hidden_size"])


def tiny_lumina2_transformer(seed: int = 17, **overrides: Any) -> Any:
    """diffusers' Lumina2Transformer2DModel of LUMINA2_TINY, random weights scaled so that the
    caption visibly matters (the tests assert it)."""
    import diffusers

    return randomized(diffusers.Lumina2Transformer2DModel(**{**LUMINA2_TINY, **overrides}),
                      seed, scale=0.3)


def write_lumina2_transformer(folder: Path, seed: int = 17, **overrides: Any) -> Any:
    """tiny_lumina2_transformer's model saved by diffusers into `folder` (a pipeline folder's
    `transformer/`); returns the model."""
    model = tiny_lumina2_transformer(seed, **overrides)
    model.save_pretrained(folder)
    return model


@functools.cache
def tiny_gemma2_text(seed: int = 7) -> Any:
    """transformers' Gemma2Model of GEMMA2_TINY (Lumina2Pipeline's text_encoder), random
    weights; norm weights near 0 (the scale is 1 + weight), as Gemma stores them. Made once:
    callers must not change it."""
    import torch
    import transformers

    model = randomized(transformers.Gemma2Model(transformers.Gemma2Config(**GEMMA2_TINY)),
                       seed, scale=0.3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.sub_(1.0)
    return model.eval()


def write_gemma2_text(folder: Path, seed: int = 7) -> Path:
    """tiny_gemma2_text saved by transformers into `folder` (a pipeline folder's
    `text_encoder/`); returns the folder."""
    tiny_gemma2_text(seed).save_pretrained(folder)
    return folder


def original_layout(transformer: Any, prefix: str = "model.diffusion_model.") -> dict[str, Any]:
    """A diffusers Lumina2Transformer2DModel's tensors in the original (Alpha-VLLM NextDiT)
    layout, as Lumina-Image-2.0's and Neta Lumina's single files hold them, under `prefix`:
    diffusers' convert_lumina2_to_diffusers undone (fused attention.qkv; the unused
    norm_final.weight it drops, here ones)."""
    import torch

    state = {k: v.detach().clone().contiguous() for k, v in transformer.state_dict().items()}
    heads = (("time_caption_embed.timestep_embedder.linear_1.", "t_embedder.mlp.0."),
             ("time_caption_embed.timestep_embedder.linear_2.", "t_embedder.mlp.2."),
             ("time_caption_embed.caption_embedder.", "cap_embedder."),
             ("norm_out.linear_1.", "final_layer.adaLN_modulation.1."),
             ("norm_out.linear_2.", "final_layer.linear."))
    parts = ((".attn.to_out.0.", ".attention.out."), (".attn.norm_q.", ".attention.q_norm."),
             (".attn.norm_k.", ".attention.k_norm."), (".attn.to_qkv.", ".attention.qkv."),
             (".feed_forward.linear_1.", ".feed_forward.w1."),
             (".feed_forward.linear_2.", ".feed_forward.w2."),
             (".feed_forward.linear_3.", ".feed_forward.w3."),
             (".norm1.linear.", ".adaLN_modulation.1."), (".norm1.norm.", ".attention_norm1."),
             (".norm1.", ".attention_norm1."), (".norm2.", ".attention_norm2."))
    out = {prefix + "norm_final.weight": torch.ones(transformer.config.hidden_size)}
    for key, value in state.items():
        if ".attn.to_k." in key or ".attn.to_v." in key:
            continue
        if ".attn.to_q." in key:
            value = torch.cat([state[key.replace("to_q", n)] for n in ("to_q", "to_k", "to_v")])
            key = key.replace("to_q", "to_qkv")
        for new, old in heads:
            key = old + key[len(new):] if key.startswith(new) else key
        for new, old in parts:
            if new in key:
                key = key.replace(new, old)
                break
        out[prefix + key] = value
    return out
