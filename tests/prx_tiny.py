"""Tiny random PRX parts built in-process: diffusers' PRXTransformer2DModel, transformers'
T5GemmaEncoder (PRX's text encoder), and whole PRXPipeline folders (FLUX.1's 16-channel VAE
form at 2x downsampling, or dc_ae_tiny's DC-AE; a Gemma-shaped tokenizer of 32 tokens at most,
a constant-shift flow scheduler)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from longcat_image_tiny import tiny_longcat_vae
from lumina2_pipeline_tiny import tiny_lumina2_tokenizer
from sd_tiny import randomized

# Gemma 2's layers (local / global / local), grouped-query attention, scores soft-capped at 2
# (50 never binds on tiny random scores), a rotary base small enough that positions turn; the
# window past the tokenizer's 32 tokens, as the real 4096 is past PRX's 256
T5GEMMA_TINY: dict[str, Any] = dict(
    vocab_size=160, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=16,
    sliding_window=4096, attn_logit_softcapping=2.0,
    rope_parameters={"rope_type": "default", "rope_theta": 100.0},
    pad_token_id=0, eos_token_id=1, bos_token_id=2)

# 16 latent channels in 2 x 2 patches, 4 heads of 12 = the rotary axes 6 + 6, the text
# T5GEMMA_TINY's 32-wide states, two blocks
PRX_TINY: dict[str, Any] = dict(
    in_channels=16, patch_size=2, context_in_dim=T5GEMMA_TINY["hidden_size"], hidden_size=48,
    mlp_ratio=2.5, num_heads=4, depth=2, axes_dim=[6, 6], theta=10000)
# PRX's scheduler: FlowMatchEulerDiscreteScheduler at a constant shift
PRX_SCHEDULER: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 3.0,
                                 "use_dynamic_shifting": False}
MAX_TOKENS = 32  # the tiny tokenizer's model_max_length (PRX pads every prompt to it)


def tiny_prx_transformer(seed: int = 11, **overrides: Any) -> Any:
    """diffusers' PRXTransformer2DModel of PRX_TINY, random weights scaled so the text
    visibly matters (the tests assert it)."""
    import diffusers

    return randomized(diffusers.PRXTransformer2DModel(**{**PRX_TINY, **overrides}), seed,
                      scale=0.4)


@functools.cache
def tiny_t5gemma(seed: int = 7) -> Any:
    """transformers' T5GemmaEncoder of T5GEMMA_TINY, random weights; norm weights near 0 (the
    scale is 1 + weight), as Gemma stores them. Made once: callers must not change it."""
    import torch
    from transformers import T5GemmaConfig
    from transformers.models.t5gemma.modeling_t5gemma import T5GemmaEncoder

    # the encoder's config as a whole T5Gemma's sets it (its dropout and is_decoder)
    config = T5GemmaConfig(encoder=T5GEMMA_TINY, decoder=T5GEMMA_TINY).encoder
    model = randomized(T5GemmaEncoder(config), seed, scale=0.3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.sub_(1.0)
    return model.eval()


def tiny_prx_pipeline(root: Path, name: str = "prx", *, dc_ae: bool = False) -> Any:
    """diffusers' PRXPipeline of tiny random parts saved to `root / name`; returns it.
    `dc_ae`: dc_ae_tiny's DC-AE (8 latent channels, 4x) in place of FLUX.1's VAE form."""
    import diffusers
    import transformers
    from dc_ae_tiny import tiny_dc_ae

    tokens = tiny_lumina2_tokenizer(root / f"{name}-tokenizer")
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(tokens / "tokenizer.json"), pad_token="<pad>", bos_token="<bos>",
        eos_token="<eos>", padding_side="right", model_max_length=MAX_TOKENS)
    vae = tiny_dc_ae() if dc_ae else tiny_longcat_vae()
    pipe = diffusers.PRXPipeline(
        transformer=tiny_prx_transformer(in_channels=vae.config.latent_channels),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**PRX_SCHEDULER),
        text_encoder=tiny_t5gemma(), tokenizer=tokenizer, vae=vae, default_sample_size=256)
    pipe.save_pretrained(root / name)
    return pipe
