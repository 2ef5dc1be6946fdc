"""Tiny random LongCat-Image components built in-process (diffusers, transformers, tokenizers):
a LongCat-Image transformer, FLUX.1's VAE with 16 latent channels (LongCatImagePipeline fixes
16), a Qwen2.5-VL text encoder and a whole LongCatImagePipeline folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flow_tiny import FLUX_DEV_SCHEDULER
from qwenimage_tiny import tiny_qwen25vl
from sd_tiny import VAE_TINY, randomized
from zimage_tiny import QWEN3_TINY, tiny_qwen_tokenizer, transformers_tokenizer

# 16 latent channels packed 2x2 to 64; Qwen2.5-VL's states 40 wide (QWEN3_TINY's)
LONGCAT_TINY: dict[str, Any] = dict(
    patch_size=1, in_channels=64, num_layers=2, num_single_layers=2, attention_head_dim=8,
    num_attention_heads=2, joint_attention_dim=QWEN3_TINY["hidden_size"],
    pooled_projection_dim=QWEN3_TINY["hidden_size"], axes_dims_rope=(2, 2, 4))


def tiny_longcat_transformer(seed: int = 7) -> Any:
    """diffusers' LongCatImageTransformer2DModel of LONGCAT_TINY, random weights scaled so the
    text visibly matters (the tests assert it)."""
    import diffusers

    return randomized(diffusers.LongCatImageTransformer2DModel(**LONGCAT_TINY), seed,
                      scale=0.4)


def tiny_longcat_vae(seed: int = 2) -> Any:
    """diffusers' AutoencoderKL in FLUX.1's form (no quant convs, its scale and shift), 16
    latent channels, 2x downsampling."""
    import diffusers

    return randomized(diffusers.AutoencoderKL(
        **{**VAE_TINY, "latent_channels": 16}, use_quant_conv=False, use_post_quant_conv=False,
        scaling_factor=0.3611, shift_factor=0.1159), seed)


def tiny_longcat_pipeline(root: Path) -> Any:
    """diffusers' LongCatImagePipeline of tiny random parts (no text_processor: it serves
    only the prompt rewrite) saved to `root / "longcat-image"`; returns the pipeline."""
    import diffusers

    tokenizer = transformers_tokenizer(tiny_qwen_tokenizer(root / "qwen-tokenizer"))
    pipe = diffusers.LongCatImagePipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**FLUX_DEV_SCHEDULER),
        vae=tiny_longcat_vae(), text_encoder=tiny_qwen25vl(), tokenizer=tokenizer,
        text_processor=None, transformer=tiny_longcat_transformer())
    pipe.save_pretrained(root / "longcat-image")
    return pipe


def tiny_longcat_edit_pipeline(root: Path) -> Any:
    """diffusers' LongCatImageEditPipeline of tiny random parts (qwenedit_tiny's Qwen2.5-VL
    with its vision tower and processor) saved to `root / "longcat-edit"`; returns it."""
    import json

    import diffusers
    from qwenedit_tiny import tiny_vision_text_encoder

    encoder, processor = tiny_vision_text_encoder(root)
    pipe = diffusers.LongCatImageEditPipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**FLUX_DEV_SCHEDULER),
        vae=tiny_longcat_vae(), text_encoder=encoder, tokenizer=processor.tokenizer,
        text_processor=processor, transformer=tiny_longcat_transformer())
    pipe.save_pretrained(root / "longcat-edit")
    index = root / "longcat-edit" / "model_index.json"  # as a real folder names it
    index.write_text(json.dumps({**json.loads(index.read_text()),
                                 "text_processor": ["transformers", "Qwen2VLProcessor"]}))
    return pipe
