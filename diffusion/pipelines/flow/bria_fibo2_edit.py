"""The pictures a Bria FIBO 2 edit reads, prepared as diffusers' BriaFibo2ImageProcessor
prepares them (as FIBO 2's training did): each scaled (Lanczos) to cover its size and
centre-cropped to it, the size of the result for a single picture, for several each
picture's own trained size about a megapixel (`trained_size`); Qwen3-VL reads each crop
shrunk to at most 768 pixels a side (Pillow's thumbnail), the VAE the crop itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["as_pictures", "edit_crops", "encoder_copy", "trained_size"]


def trained_size(aspect: float, multiple: int, area: int) -> tuple[int, int]:
    """The (width, height) FIBO 2 was trained at for `aspect` (width / height): of the sizes
    in multiples of `multiple`, at least 4 of it a side and within 10% of `area`, the one that
    crops the least, then the one closest to `area`. diffusers:
    `BriaFibo2ImageProcessor.get_image_size(aspect, area)`."""
    least = 4 * multiple
    sizes = [(w, h) for w in range(least, 2 * area // least, multiple)
             for h in range(least, 2 * area // w, multiple) if 0.9 * area <= w * h <= 1.1 * area]

    def crop(size: tuple[int, int]) -> float:
        ratio = size[0] / size[1]
        return 1 - min(ratio / aspect, aspect / ratio)

    return min(sizes, key=lambda s: (round(crop(s), 9), abs(s[0] * s[1] - area), -s[0]))


def _crop(image: Image.Image, width: int, height: int) -> Image.Image:
    image = image.convert("RGB")
    scale = max(height / image.height, width / image.width)
    w, h = math.ceil(image.width * scale), math.ceil(image.height * scale)
    image = image.resize((w, h), resample=Image.Resampling.LANCZOS)
    left, top = (w - width) // 2, (h - height) // 2
    return image.crop((left, top, left + width, top + height))


def as_pictures(images: Sequence[Any]) -> list[Image.Image]:
    """`images` (PIL, or uint8 HxWx3 arrays) as PIL images."""
    return [i if isinstance(i, Image.Image) else Image.fromarray(np.asarray(i, np.uint8))
            for i in images]


def edit_crops(pictures: Sequence[Image.Image], width: int, height: int, multiple: int,
               area: int) -> list[Image.Image]:
    """The crops of `pictures`: a single picture at width x height, several each at its
    `trained_size`. diffusers: `BriaFibo2ImageProcessor.preprocess`'s crops (without a
    mask)."""
    sizes = ([(width, height)] if len(pictures) == 1 else
             [trained_size(p.width / p.height, multiple, area) for p in pictures])
    return [_crop(p, w, h) for p, (w, h) in zip(pictures, sizes, strict=True)]


def encoder_copy(crop: Image.Image, side: int = 768) -> Image.Image:
    """What Qwen3-VL reads of a crop: at most `side` pixels a side (Pillow's thumbnail)."""
    copy = crop.copy()
    copy.thumbnail((side, side))
    return copy
