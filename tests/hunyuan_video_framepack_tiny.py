"""A tiny random FramePack transformer (diffusers' HunyuanVideoFramepackTransformer3DModel):
tests/hunyuan_video_tiny.py's HunyuanVideo transformer with the clean history's patch
embeddings and the SigLIP image projection, whose image states are tests/
hunyuan_video15_pipe_tiny.py's tiny SigLIP's (24 wide); `write_framepack_transformer`
saves it as a diffusers `transformer/` folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hunyuan_video15_pipe_tiny import SIGLIP_TINY
from hunyuan_video_tiny import HUNYUAN_VIDEO_TINY
from sd_tiny import randomized

FRAMEPACK_TINY: dict[str, Any] = dict(
    HUNYUAN_VIDEO_TINY, has_image_proj=True, image_proj_dim=SIGLIP_TINY["hidden_size"],
    has_clean_x_embedder=True)


def tiny_framepack_transformer(seed: int = 47, **overrides: Any) -> Any:
    """diffusers' HunyuanVideoFramepackTransformer3DModel of FRAMEPACK_TINY (with
    `overrides`), random weights scaled so that the image states and the history visibly
    matter (tests/diffusion/models/test_hunyuan_video_framepack.py asserts it)."""
    import diffusers

    return randomized(diffusers.HunyuanVideoFramepackTransformer3DModel(
        **{**FRAMEPACK_TINY, **overrides}), seed, scale=0.3)


def write_framepack_transformer(folder: Path, seed: int = 47, **overrides: Any) -> Any:
    """tiny_framepack_transformer's model saved by diffusers into `folder`; returns it."""
    model = tiny_framepack_transformer(seed, **overrides)
    model.save_pretrained(folder)
    return model


def tiny_framepack_pipeline(root: Path, hunyuan_video: Any, name: str = "framepack") -> Any:
    """diffusers' HunyuanVideoFramepackPipeline of the tiny FramePack transformer, the tiny
    SigLIP and its processor (28 x 28) and the rest of `hunyuan_video`, diffusers' tiny
    HunyuanVideoPipeline (tests/hunyuan_video_pipe_tiny.py: its VAE, Llama, CLIP, tokenizers
    and scheduler); saved by diffusers to `root / name`; returns the pipeline."""
    import diffusers
    from hunyuan_video15_pipe_tiny import tiny_siglip

    siglip, processor = tiny_siglip()
    pipe = diffusers.HunyuanVideoFramepackPipeline(
        **{**hunyuan_video.components, "transformer": tiny_framepack_transformer()},
        image_encoder=siglip, feature_extractor=processor)
    pipe.save_pretrained(root / name)
    return pipe
