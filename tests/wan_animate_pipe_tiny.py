"""A tiny random Wan 2.2 Animate diffusers folder (diffusers' WanAnimatePipeline of
wan_animate_tiny's transformer, wan_tiny's VAE, UMT5 and scheduler, a CLIP vision encoder as
wide as the transformer reads) and random inputs for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sd_tiny import randomized
from wan_animate_tiny import ANIMATE_TINY, tiny_animate_transformer

FACE = ANIMATE_TINY["motion_encoder_size"]


def tiny_wan_animate_pipeline(root: Path) -> Any:
    """diffusers' WanAnimatePipeline of tiny random parts saved to `root / "wan-animate"`;
    returns it."""
    import diffusers
    import transformers
    from flow_tiny import tiny_t5_tokenizer
    from wan_tiny import CLIP_VISION_TINY, WAN_SCHEDULER, tiny_umt5, tiny_wan_vae

    tiny_t5_tokenizer(root / "umt5-tokenizer")
    tokenizer = transformers.T5TokenizerFast(
        tokenizer_file=str(root / "umt5-tokenizer" / "tokenizer.json"))
    encoder = randomized(transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
        **{**CLIP_VISION_TINY, "hidden_size": ANIMATE_TINY["image_dim"]})), 12)
    processor = transformers.CLIPImageProcessorPil(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    pipe = diffusers.WanAnimatePipeline(
        tokenizer=tokenizer, text_encoder=tiny_umt5(), transformer=tiny_animate_transformer(),
        vae=tiny_wan_vae(), scheduler=diffusers.UniPCMultistepScheduler(**WAN_SCHEDULER),
        image_encoder=encoder, image_processor=processor)
    pipe.save_pretrained(root / "wan-animate")
    return pipe


def random_video(rng: np.random.Generator, frames: int, height: int, width: int,
                 channels: int = 3) -> np.ndarray:
    """(frames, height, width, channels) uint8 of smooth random colour (a few blocks
    upscaled), so a Lanczos resize and the tiny VAE keep it apart from another."""
    blocks = rng.integers(0, 256, (frames, 4, 6, channels)).astype(np.uint8)
    return np.repeat(np.repeat(blocks, -(-height // 4), axis=1), -(-width // 6),
                     axis=2)[:, :height, :width]
