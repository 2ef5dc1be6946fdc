"""Tiny random control models for the interface tests (CLI, server, page): diffusers'
ControlNetModel of sd_tiny's UNet, saved as the folders a --controlnet-dir holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sd_tiny import UNET_TINY, randomized

__all__ = ["circle", "tiny_controlnet", "write_controlnets"]

_UNET_ONLY = ("up_block_types", "out_channels", "sample_size")


def tiny_controlnet(seed: int = 4) -> Any:
    """diffusers' ControlNetModel of the tiny UNet (its map at twice the latent size, the
    tiny VAE's factor), every weight random (no zero convs)."""
    import diffusers

    config = {k: v for k, v in UNET_TINY.items() if k not in _UNET_ONLY}
    config["conditioning_embedding_out_channels"] = (8, 16)
    return randomized(diffusers.ControlNetModel(**config), seed)


def write_controlnets(folder: Path, names: tuple[str, ...] = ("tiny_canny", "tiny_scribble")
                      ) -> Path:
    """`folder` holding one diffusers ControlNet folder per name (different weights)."""
    for seed, name in enumerate(names, start=12):
        tiny_controlnet(seed).save_pretrained(folder / name)
    return folder


def circle(height: int = 40, width: int = 48, seed: int = 0) -> np.ndarray:
    """A white disc on black with some noise: uint8 HxWx3, a picture with clear edges."""
    y, x = np.mgrid[0:height, 0:width]
    disc = (np.hypot(x - width * 0.4, y - height * 0.45) < min(height, width) / 3) * 220
    noise = np.random.default_rng(seed).integers(0, 30, (height, width))
    return np.repeat((disc + noise).astype(np.uint8)[:, :, None], 3, axis=2)
