"""Any image upscaler by its WebUI name: Pillow's ("None", "Lanczos", "Nearest") or a model from
`--upscaler-dir` ("R-ESRGAN 4x+"), for the Extras API and `python -m diffusion upscale`."""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np

from .interpolation import IMAGE_UPSCALERS, upscale_image
from .models import MODEL_UPSCALERS

__all__ = ["MAX_PIXELS", "upscale", "upscaler_names"]

# the most pixels an upscaled picture may have: Pillow's decompression-bomb limit (the largest
# picture Pillow reads back; a 1x2000 picture covering 8192x8 would otherwise ask for 134
# billion pixels and take the process's memory)
MAX_PIXELS = 178_956_970


def upscaler_names() -> list[str]:
    """Every image upscaler name this process knows: "None", "Lanczos", "Nearest", then the
    registered models (the WebUI's /sdapi/v1/upscalers order)."""
    return ["None", *(n for n in IMAGE_UPSCALERS if n != "None"), *MODEL_UPSCALERS]


def upscale(image: np.ndarray, name: str, scale: float, device: Any = None) -> np.ndarray:
    """(H, W, 3) uint8 upscaled by `scale` with upscaler `name`: a model's (on `device`, the
    gpucore Device of the server's worker that runs it, or a function giving it, called only
    once a model runs: a refused size opens no device; None: the upscaler's), or Pillow's for
    "Lanczos", "Nearest" and "None" (a Lanczos resize, as the WebUI's UpscalerNone ends in).
    The size is the WebUI's: each side times `scale`, rounded down to a multiple of 8.
    Raises ValueError for an unknown name, listing the known ones."""
    if name not in MODEL_UPSCALERS and name not in IMAGE_UPSCALERS:
        close = difflib.get_close_matches(str(name), upscaler_names(), n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown upscaler {name!r}{guess}; known: "
                         f"{', '.join(upscaler_names())} (model upscalers come from "
                         "--upscaler-dir)")
    height, width = image.shape[:2]
    size = (int(width * scale) // 8 * 8, int(height * scale) // 8 * 8)
    if size[0] < 8 or size[1] < 8:
        raise ValueError(f"upscaling {width}x{height} by {scale} gives less than 8x8")
    if size[0] * size[1] > MAX_PIXELS:
        raise ValueError(f"upscaling {width}x{height} by {scale:g} gives {size[0]}x{size[1]}, "
                         f"over the limit of {MAX_PIXELS:,} pixels; upscale by less or a "
                         "smaller picture")
    if name in MODEL_UPSCALERS:
        return MODEL_UPSCALERS[name].upscale(image, scale, device() if callable(device)
                                             else device)
    return upscale_image(image, size, name)
