"""Tiny random HunyuanImage 2.1 parts other than the transformer (tests/hunyuanimage_tiny.py
has that), built in-process: its VAE, the ByT5 glyph encoder and its tokenizer, Qwen2.5-VL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sd_tiny import randomized

HYVAE_TINY: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(32, 64, 64),
    layers_per_block=1, spatial_compression_ratio=4, sample_size=64, scaling_factor=0.75)
# ByT5's vocabulary (3 specials, 256 bytes, 125 sentinels) over a tiny T5 v1.1 encoder
BYT5_TINY: dict[str, Any] = dict(
    vocab_size=384, d_model=32, d_kv=8, d_ff=40, num_layers=2, num_heads=4,
    feed_forward_proj="gated-gelu", relative_attention_num_buckets=8,
    relative_attention_max_distance=20, dropout_rate=0.0)


def tiny_hyvae(seed: int = 5) -> Any:
    """diffusers' AutoencoderKLHunyuanImage of HYVAE_TINY (4x compression), random."""
    import diffusers

    return randomized(diffusers.AutoencoderKLHunyuanImage(**HYVAE_TINY), seed)


def tiny_byt5(seed: int = 6) -> Any:
    """transformers' T5EncoderModel of BYT5_TINY, random."""
    import transformers

    return randomized(transformers.T5EncoderModel(transformers.T5Config(**BYT5_TINY)), seed)


def byt5_tokenizer(folder: Path | None = None) -> Any:
    """transformers' ByT5Tokenizer (saved to `folder` when given)."""
    import transformers

    tokenizer = transformers.ByT5Tokenizer()
    if folder is not None:
        tokenizer.save_pretrained(folder)
    return tokenizer


# HunyuanImage 2.1's guiders with the APG switch early enough for a 3-step run to reach it;
# the OCR guider (a prompt that quotes text) with other scales, so that the choice shows
GUIDER_TINY: dict[str, Any] = dict(guidance_scale=3.5, adaptive_projected_guidance_scale=6.0,
                                   adaptive_projected_guidance_start_step=1)
OCR_GUIDER_TINY: dict[str, Any] = dict(guidance_scale=2.5,
                                       adaptive_projected_guidance_scale=8.0,
                                       adaptive_projected_guidance_start_step=0, eta=0.5)


def tiny_hunyuanimage_pipeline(root: Path, *, distilled: bool = False) -> Any:
    """diffusers' HunyuanImagePipeline of tiny random parts (the distilled checkpoint's
    transformer and no guiders where `distilled`) saved to `root / "hunyuanimage"`;
    returns the pipeline."""
    import diffusers
    from hunyuanimage_tiny import HUNYUANIMAGE_DISTILLED, tiny_hunyuanimage_transformer
    from qwenimage_tiny import tiny_qwen25vl
    from zimage_tiny import tiny_qwen_tokenizer, transformers_tokenizer

    guiders = {} if distilled else dict(
        guider=diffusers.guiders.AdaptiveProjectedMixGuidance(**GUIDER_TINY),
        ocr_guider=diffusers.guiders.AdaptiveProjectedMixGuidance(**OCR_GUIDER_TINY))
    pipe = diffusers.HunyuanImagePipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=4.0),
        vae=tiny_hyvae(), text_encoder=tiny_qwen25vl(),
        tokenizer=transformers_tokenizer(tiny_qwen_tokenizer(root / "qwen-tokenizer")),
        text_encoder_2=tiny_byt5(), tokenizer_2=byt5_tokenizer(),
        transformer=tiny_hunyuanimage_transformer(
            **(HUNYUANIMAGE_DISTILLED if distilled else {})), **guiders)
    pipe.save_pretrained(root / "hunyuanimage")
    return pipe


def diffusers_picture(pipe: Any, prompt: str, **settings: Any) -> Any:
    """diffusers' pictures (B, H, W, 3) of `prompt` from seed 7 (torch's generator) with
    `settings`, its Qwen prompt limit cut from 1000 tokens to the prompt's own (none
    truncated: the transformer masks the padding, which only slows the reference down)."""
    import torch

    tokens = len(pipe.tokenizer(pipe.prompt_template_encode.format(prompt)).input_ids)
    pipe.tokenizer_max_length = tokens - pipe.prompt_template_encode_start_idx
    with torch.no_grad():
        return pipe(prompt, generator=torch.Generator().manual_seed(7), output_type="np",
                    **settings).images
