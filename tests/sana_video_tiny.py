"""Tiny random Sana Video transformers and SanaVideoPipeline folders built in-process:
diffusers' SanaVideoTransformer3DModel shrunk, kept in memory as a reference, and a pipeline
of it with sana_pipeline_tiny's Gemma 2 and tokenizer and wan_tiny's Wan 2.1 VAE, saved as a
diffusers folder for loader and pipeline tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sana_pipeline_tiny import SANA_SCHEDULER, tiny_sana_gemma, tiny_sana_tokenizer
from sd_tiny import randomized
from wan_tiny import tiny_wan_vae

# SANA-Video 2B's layout shrunk: 4 latent channels (Wan 2.1's 16) in 1 x 2 x 2 patches, two
# blocks of 2 heads of 12 (Wan's rotary split 4 + 4 + 4 features: frame, row, column),
# captions of 24 features (Gemma 2's 2304; sana_pipeline_tiny's Gemma), GLUMBTempConv's
# inner width int(2.5 * 24) = 60
SANA_VIDEO_TINY: dict[str, Any] = dict(
    in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=2,
    num_cross_attention_heads=2, cross_attention_head_dim=12, cross_attention_dim=24,
    caption_channels=24, mlp_ratio=2.5, attention_bias=False, sample_size=8,
    patch_size=(1, 2, 2), qk_norm="rms_norm_across_heads", rope_max_seq_len=64)


def tiny_sana_video_transformer(seed: int = 29, **overrides: Any) -> Any:
    """diffusers' SanaVideoTransformer3DModel of SANA_VIDEO_TINY, random weights scaled so
    that the caption and the neighbouring frames visibly matter (the tests assert it)."""
    import diffusers
    import torch

    model = randomized(diffusers.SanaVideoTransformer3DModel(**{**SANA_VIDEO_TINY,
                                                                **overrides}), seed, scale=0.4)
    # the cross-attention writes to the stream ungated: tripled, as in sana_tiny
    with torch.no_grad():
        for block in model.transformer_blocks:
            block.attn2.to_out[0].weight.mul_(3.0)
    return model


def write_sana_video_transformer(folder: Path, seed: int = 29, **overrides: Any) -> Any:
    """tiny_sana_video_transformer's model saved by diffusers into `folder` (a pipeline
    folder's `transformer/`); returns the model."""
    model = tiny_sana_video_transformer(seed, **overrides)
    model.save_pretrained(folder)
    return model


# Sana's DPM-Solver++ on flow sigmas with a video model's larger shift
SANA_VIDEO_SCHEDULER: dict[str, Any] = dict(SANA_SCHEDULER, flow_shift=8.0)


def tiny_sana_video_pipeline(root: Path, name: str = "sana-video", **overrides: Any) -> Any:
    """diffusers' SanaVideoPipeline of tiny random parts saved to `root / name`, the
    transformer's config changed by `overrides`; returns it."""
    import diffusers
    import transformers

    tokens = tiny_sana_tokenizer(root / f"{name}-tokenizer")
    tokenizer = transformers.GemmaTokenizerFast(
        tokenizer_file=str(tokens / "tokenizer.json"), pad_token="<pad>", bos_token="<bos>",
        eos_token="<eos>", padding_side="left")
    pipe = diffusers.SanaVideoPipeline(
        transformer=tiny_sana_video_transformer(**overrides), vae=tiny_wan_vae(),
        text_encoder=tiny_sana_gemma(), tokenizer=tokenizer,
        scheduler=diffusers.DPMSolverMultistepScheduler(**SANA_VIDEO_SCHEDULER))
    pipe.save_pretrained(root / name)
    (tokens / "tokenizer_config.json").replace(root / name / "tokenizer" /
                                               "tokenizer_config.json")
    return pipe
