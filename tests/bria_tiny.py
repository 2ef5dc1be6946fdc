"""Tiny random Bria 3.2 components built in-process (diffusers, transformers, tokenizers): a
Bria transformer, a T5 encoder with its Unigram tokenizer (flow_tiny's), a VAE without a
shift factor (as BriaPipeline expects of its own: the latents only scaled) and a whole
BriaPipeline folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flow_tiny import T5_TINY, tiny_t5, tiny_t5_tokenizer
from sd_tiny import VAE_TINY, randomized

# VAE_TINY's 4 latent channels packed 2x2 to 16; T5's states 32 wide
BRIA_TINY: dict[str, Any] = dict(
    patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=8,
    num_attention_heads=2, joint_attention_dim=T5_TINY["d_model"], axes_dims_rope=(2, 2, 4),
    rope_theta=10000, time_theta=10000)
# Bria's scheduler without dynamic shifting: the training sigmas, shifted by a constant
BRIA_SCHEDULER: dict[str, Any] = dict(num_train_timesteps=1000, shift=3.0,
                                      use_dynamic_shifting=False)


def tiny_bria_transformer(seed: int = 7) -> Any:
    """diffusers' BriaTransformer2DModel of BRIA_TINY, random weights scaled (its context
    embedder 4x) so that the text visibly matters (the tests assert it)."""
    import diffusers
    import torch

    model = randomized(diffusers.BriaTransformer2DModel(**BRIA_TINY), seed, scale=0.4)
    with torch.no_grad():
        model.context_embedder.weight.mul_(4)
    return model


def tiny_bria_vae(seed: int = 2) -> Any:
    """diffusers' AutoencoderKL of VAE_TINY (quant convs, no shift factor), 2x downsampling."""
    import diffusers

    return randomized(diffusers.AutoencoderKL(**VAE_TINY, scaling_factor=0.5), seed)


def tiny_bria_pipeline(root: Path) -> Any:
    """diffusers' BriaPipeline of tiny random parts saved to `root / "bria"`; returns the
    pipeline."""
    import diffusers
    import transformers

    tiny_t5_tokenizer(root / "t5-tokenizer")
    tokenizer = transformers.T5TokenizerFast(
        tokenizer_file=str(root / "t5-tokenizer" / "tokenizer.json"))
    pipe = diffusers.BriaPipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**BRIA_SCHEDULER),
        vae=tiny_bria_vae(), text_encoder=tiny_t5(), tokenizer=tokenizer,
        transformer=tiny_bria_transformer())
    pipe.save_pretrained(root / "bria")
    return pipe
