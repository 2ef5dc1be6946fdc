"""Tiny random CogView4 components built in-process (diffusers, transformers, tokenizers): a
CogView4 transformer, GLM-4's text encoder (transformers' GlmModel), weights scaled so the
prompt visibly matters (the tests assert it), and a whole CogView4Pipeline folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sd_tiny import VAE_TINY, randomized

# GLM-4-9B's form shrunk: 4 query heads sharing 2 k/v heads of 16, half of each rotated
GLM_TINY: dict[str, Any] = dict(
    vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
    rms_norm_eps=1e-5, pad_token_id=0, eos_token_id=[1], attention_bias=True,
    partial_rotary_factor=0.5)

# 16 latent channels patched 2x2; heads of 8 (rope: 2 row + 2 column frequencies, halves);
# the text states GLM_TINY's width
COGVIEW4_TINY: dict[str, Any] = dict(
    patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=8,
    num_attention_heads=3, text_embed_dim=GLM_TINY["hidden_size"], time_embed_dim=20,
    condition_dim=8, rope_axes_dim=(32, 32))


def tiny_glm(seed: int = 11, **overrides: Any) -> Any:
    """transformers' GlmModel of GLM_TINY (with `overrides`), random weights."""
    import transformers

    return randomized(transformers.GlmModel(transformers.GlmConfig(
        **{**GLM_TINY, **overrides})), seed, scale=0.6)


def tiny_cogview4_transformer(seed: int = 5) -> Any:
    """diffusers' CogView4Transformer2DModel of COGVIEW4_TINY, random weights scaled so the
    text visibly matters."""
    import diffusers

    return randomized(diffusers.CogView4Transformer2DModel(**COGVIEW4_TINY), seed, scale=0.5)


# CogView4-6B's scheduler: mu linear in sqrt(image tokens), the shift linear in mu
COGVIEW4_SCHEDULER: dict[str, Any] = dict(
    base_image_seq_len=256, base_shift=0.25, max_image_seq_len=4096, max_shift=0.75,
    num_train_timesteps=1000, shift=1.0, time_shift_type="linear", use_dynamic_shifting=True)


def tiny_cogview4_pipeline(root: Path) -> Any:
    """diffusers' CogView4Pipeline of tiny random parts (a Qwen-shaped tokenizer standing in
    for GLM's; a 16-channel VAE with a shift_factor, which diffusers' decode leaves out) saved
    to `root / "cogview4"`; returns the pipeline."""
    import diffusers
    from zimage_tiny import tiny_qwen_tokenizer, transformers_tokenizer

    tokenizer = transformers_tokenizer(tiny_qwen_tokenizer(root / "glm-tokenizer"))
    vae = randomized(diffusers.AutoencoderKL(
        **{**VAE_TINY, "latent_channels": 16}, scaling_factor=0.3611, shift_factor=0.1159), 2)
    pipe = diffusers.CogView4Pipeline(
        tokenizer=tokenizer, text_encoder=tiny_glm(), vae=vae,
        transformer=tiny_cogview4_transformer(),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**COGVIEW4_SCHEDULER))
    pipe.save_pretrained(root / "cogview4")
    return pipe


def tiny_cogview4_control(root: Path, reference: Any) -> Any:
    """diffusers' CogView4ControlPipeline of `reference`'s (a tiny CogView4Pipeline's) parts
    with a control transformer (in 32 = 16 latent + 16 control channels, out 16), the map's
    input weights scaled up so that it visibly matters; saved to `root / "cogview4-control"`;
    returns the pipeline."""
    import diffusers
    import torch

    transformer = randomized(diffusers.CogView4Transformer2DModel(
        **{**COGVIEW4_TINY, "in_channels": 32}), 9, scale=0.5)
    with torch.no_grad():  # each patch's (C, p, p) values in order: the map's are the last half
        transformer.patch_embed.proj.weight[:, 16 * 2 * 2:] *= 6
    parts = {name: reference.components[name] for name in (
        "scheduler", "vae", "text_encoder", "tokenizer")}
    pipe = diffusers.CogView4ControlPipeline(**parts, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(root / "cogview4-control")
    return pipe
