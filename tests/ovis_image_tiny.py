"""Tiny random Ovis-Image components built in-process (diffusers, transformers, tokenizers): an
Ovis-Image transformer, FLUX.1's VAE with 16 latent channels, a Qwen3 text encoder and a whole
OvisImagePipeline folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flow_tiny import FLUX_DEV_SCHEDULER
from longcat_image_tiny import tiny_longcat_vae
from sd_tiny import randomized
from zimage_tiny import QWEN3_TINY, tiny_qwen3, tiny_qwen_tokenizer, transformers_tokenizer

# 16 latent channels packed 2x2 to 64; Qwen3's states 40 wide (QWEN3_TINY's)
OVIS_TINY: dict[str, Any] = dict(
    patch_size=1, in_channels=64, out_channels=64, num_layers=2, num_single_layers=2,
    attention_head_dim=8, num_attention_heads=2,
    joint_attention_dim=QWEN3_TINY["hidden_size"], axes_dims_rope=(2, 2, 4))


def tiny_ovis_transformer(seed: int = 7) -> Any:
    """diffusers' OvisImageTransformer2DModel of OVIS_TINY, random weights scaled so the text
    visibly matters (the tests assert it)."""
    import diffusers

    return randomized(diffusers.OvisImageTransformer2DModel(**OVIS_TINY), seed, scale=0.4)


def tiny_ovis_pipeline(root: Path) -> Any:
    """diffusers' OvisImagePipeline of tiny random parts (Qwen3 40 wide, FLUX.1's VAE form)
    saved to `root / "ovis-image"`; returns the pipeline."""
    import diffusers

    tokenizer = transformers_tokenizer(tiny_qwen_tokenizer(root / "qwen-tokenizer"))
    pipe = diffusers.OvisImagePipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**FLUX_DEV_SCHEDULER),
        vae=tiny_longcat_vae(), text_encoder=tiny_qwen3(), tokenizer=tokenizer,
        transformer=tiny_ovis_transformer())
    pipe.save_pretrained(root / "ovis-image")
    return pipe
