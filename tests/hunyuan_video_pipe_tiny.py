"""A tiny random HunyuanVideo (1.0) pipeline built in-process (diffusers, transformers):
diffusers' HunyuanVideoPipeline of hunyuan_video_tiny's transformer (4 latent channels, the
distilled guidance embedding), hunyuan_video_vae_tiny's VAE (4x spatial and temporal
compression) and hunyuan_video_text_tiny's Llama, CLIP and tokenizers, with the real folder's
scheduler shift; saved by diffusers as a folder, which the pipeline under test loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hunyuan_video_text_tiny import tiny_hunyuan_video_text
from hunyuan_video_tiny import tiny_hunyuan_video_transformer
from hunyuan_video_vae_tiny import tiny_hunyuan_video_vae

SHIFT = 7.0  # hunyuanvideo-community/HunyuanVideo's scheduler shift


def tiny_hunyuan_video_pipeline(root: Path, name: str = "hunyuan-video") -> Any:
    """The tiny HunyuanVideoPipeline saved to `root / name`; returns the pipeline."""
    import diffusers

    pipe = diffusers.HunyuanVideoPipeline(
        transformer=tiny_hunyuan_video_transformer(), vae=tiny_hunyuan_video_vae(),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=SHIFT),
        **tiny_hunyuan_video_text(root))
    pipe.save_pretrained(root / name)
    return pipe
