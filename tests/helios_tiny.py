"""Tiny random Helios parts built in-process (diffusers, transformers): the transformer
(history patch embeddings, amplified history keys) and a whole HeliosPipeline folder with
Wan's tiny VAE and UMT5."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sd_tiny import randomized

# 2 heads of 12 features (rope 4 + 4 + 4), 4 latent channels as the tiny Wan VAE's
HELIOS_TINY: dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4,
    out_channels=4, text_dim=32, freq_dim=16, ffn_dim=40, num_layers=2, rope_dim=(4, 4, 4),
    is_amplify_history=True)

# HeliosScheduler of a Helios folder (one stage, UniPC on flow sigmas)
HELIOS_SCHEDULER: dict[str, Any] = dict(
    num_train_timesteps=1000, shift=1.0, stages=1, scheduler_type="unipc", solver_order=2,
    prediction_type="flow_prediction", use_flow_sigmas=True, use_dynamic_shifting=False)


def tiny_helios_transformer(seed: int = 11, **overrides: Any) -> Any:
    """diffusers' HeliosTransformer3DModel of HELIOS_TINY, random weights scaled so the text
    visibly matters."""
    import diffusers

    return randomized(diffusers.HeliosTransformer3DModel(**{**HELIOS_TINY, **overrides}),
                      seed, scale=0.3)


def tiny_helios_pipeline(root: Path, **scheduler: Any) -> Any:
    """diffusers' HeliosPipeline of tiny random parts saved to `root / "helios"` (the
    scheduler's config overridden by `scheduler`); returns it."""
    import diffusers
    import transformers
    from flow_tiny import tiny_t5_tokenizer
    from wan_tiny import tiny_umt5, tiny_wan_vae

    tiny_t5_tokenizer(root / "umt5-tokenizer")
    tokenizer = transformers.T5TokenizerFast(
        tokenizer_file=str(root / "umt5-tokenizer" / "tokenizer.json"))
    pipe = diffusers.HeliosPipeline(
        tokenizer=tokenizer, text_encoder=tiny_umt5(), transformer=tiny_helios_transformer(),
        vae=tiny_wan_vae(), scheduler=diffusers.HeliosScheduler(
            **{**HELIOS_SCHEDULER, **scheduler}))
    pipe.save_pretrained(root / "helios")
    return pipe
