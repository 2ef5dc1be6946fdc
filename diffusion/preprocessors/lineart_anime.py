"""`lineart_anime`: the lines of pix2pix's U-Net generator trained on anime drawings (netG.pth in
the annotator folder's `lineart_anime/`), as the ControlNet extension's `annotator/lineart_anime`
makes them: the picture enlarged to multiples of 256 (OpenCV's cubic, resize.resize), in -1..1
through the network, its output in 0..255 resized back to the picture (cubic, on the GPU),
clipped, truncated to uint8 and inverted (white lines on black)."""

from __future__ import annotations

import math

import numpy as np

from gpucore import Device

from ..models.annotators.unet_generator import UnetGenerator
from ..models.resample import cubic_matrix, resample
from .annotators import annotator_model, picture_tensor, to_uint8
from .resize import resize

__all__ = ["lineart_anime", "lineart_anime_lines"]

_MULTIPLE = 256


def lineart_anime_lines(image: np.ndarray, *, device: Device | None = None) -> np.ndarray:
    """The generator's map of a uint8 HxWx3 picture at its size: float32 HxW (dark lines on
    white, about 0..255), before clipping and rounding."""
    model = annotator_model("lineart_anime", "lineart_anime", "netG.pth",
                            UnetGenerator.from_state_dict, device)
    height, width = image.shape[:2]
    rows, cols = (_MULTIPLE * math.ceil(side / _MULTIPLE) for side in (height, width))
    enlarged = resize(image, (cols, rows), "cubic")
    lines = model(picture_tensor(enlarged, model.device, scale=1 / 127.5) - 1.0)
    lines = lines * 127.5 + 127.5
    if (rows, cols) != (height, width):
        lines = resample(lines, cubic_matrix(rows, height), cubic_matrix(cols, width))
    return lines.numpy()[0, 0]


def lineart_anime(image: np.ndarray, *, device: Device | None = None) -> np.ndarray:
    """The extension's lineart_anime map: uint8 HxWx3, white lines on black."""
    return to_uint8(lineart_anime_lines(image, device=device), invert=True)
