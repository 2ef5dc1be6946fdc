"""resize: Pillow's resampling (Image.resize), one separable GPU pass per axis.

The per-output windows and weights are computed here, in float64, with the same formulas and
summation order as Pillow's Resample.c (`precompute_coeffs`, `normalize_coeffs_8bpc`) and,
for nearest, Geometry.c (`ImagingScaleAffine`, whose source coordinate is a running double
sum). The shader then only gathers, so uint8 results are bit-exact with Pillow.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from gpucore import Buffer, Device

from . import _image_io as io

__all__ = ["resize"]

PRECISION_BITS = 22  # Pillow's fixed point for 8-bit images: 32 - 8 bits - 2 guard bits
BICUBIC_A = -0.5  # Pillow's (and Keys') bicubic parameter; OpenCV uses -0.75


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _bicubic(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    a = BICUBIC_A
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


_FILTERS: dict[str, tuple[float, Callable[[np.ndarray], np.ndarray]]] = {
    "bilinear": (1.0, _bilinear),
    "bicubic": (2.0, _bicubic),
}
METHODS = ("nearest", *_FILTERS)


def pillow_coefficients(in_size: int, out_size: int, method: str
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(bounds, weights): per output pixel its first source pixel and tap count (int32,
    out_size x 2), and the normalized weights (float64, out_size x ksize, zero past count).

    The filter's support widens by the scale factor when downscaling (antialiasing).
    """
    if method == "nearest":
        # Pillow walks the source coordinate with a running double sum from the first pixel
        # centre; a closed form (x + 0.5) * scale rounds differently for many size pairs.
        scale = in_size / out_size
        steps = np.full(out_size, scale)
        steps[0] = scale * 0.5
        index = np.minimum(np.cumsum(steps).astype(np.int64), in_size - 1)
        bounds = np.stack([index, np.ones_like(index)], axis=1)
        return bounds.astype(np.int32), np.ones((out_size, 1))
    support, kernel = _FILTERS[method]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = support * filterscale
    ksize = math.ceil(support) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale
    # C's (int) truncates toward zero; the clamps make that equal to floor where it matters.
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    xmax = np.minimum(np.trunc(center + support + 0.5), in_size).astype(np.int64)
    count = xmax - xmin
    taps = np.arange(ksize)
    weights = kernel((taps[None, :] + xmin[:, None] - center[:, None] + 0.5) / filterscale)
    weights = np.where(taps[None, :] < count[:, None], weights, 0.0)
    total = np.zeros(out_size)
    for k in range(ksize):  # left to right, as Pillow sums (np.sum would pair-sum)
        total += weights[:, k]
    weights = np.divide(weights, total[:, None], out=weights, where=total[:, None] != 0.0)
    return np.stack([xmin, count], axis=1).astype(np.int32), weights


def _fixed_point(weights: np.ndarray) -> np.ndarray:
    """Pillow's normalize_coeffs_8bpc: round half away from zero to 22-bit fixed point."""
    scaled = weights * (1 << PRECISION_BITS)
    return np.trunc(np.where(scaled < 0, scaled - 0.5, scaled + 0.5)).astype(np.int32)


def vertical_first(height: int, width: int, out_height: int, out_width: int) -> bool:
    """Pillow 13's pass order (python-pillow/Pillow#9549): vertical first when the height
    shrinks by more than twice as many pixels as the width does, else horizontal first.
    The order changes uint8 results (the intermediate is rounded to uint8)."""
    return out_height < height and height - out_height > 2 * (width - out_width)


def _pass(src: io.GpuImage, dst: io.GpuImage, axis: int, method: str, fixed: bool) -> None:
    """Resample `src` along x (axis 0) or y (axis 1) into `dst`."""
    in_size, out_size = (src.width, dst.width) if axis == 0 else (src.height, dst.height)
    bounds, weights = pillow_coefficients(in_size, out_size, method)
    words = _fixed_point(weights) if fixed else weights.astype(np.float32).view(np.int32)
    device = src.device
    k = io.kernel("resample", src.u8, dst.u8, FIXED=fixed, AXIS=axis)
    io.dispatch(k, dst, src.buffer, Buffer.from_numpy(bounds, device=device),
                Buffer.from_numpy(words, device=device),
                height_in=src.height, width_in=src.width, height_out=dst.height,
                width_out=dst.width, ksize=words.shape[1])


def resize(img: Any, size: tuple[int, int], *, method: str = "bilinear", layout: str = "HWC",
           device: Device | None = None) -> Any:
    """Resize an image to `size` = (height, width), as Pillow's `Image.resize` does.

    img: HxW, HxWxC (layout="HWC") or CxHxW (layout="CHW"); numpy uint8 (returns numpy uint8)
    or float (numpy float or a float32 Tensor; returns a float32 Tensor). Channels are
    resampled independently.

    method: "nearest", "bilinear" or "bicubic" (Pillow's NEAREST / BILINEAR / BICUBIC, a=-0.5),
    with pixel centres at half-integers. Downscaling widens the filter by the scale factor
    (antialiasing), like Pillow and unlike OpenCV or torch's interpolate without antialias.
    uint8 results equal Pillow 13's bit for bit (same fixed-point weights and pass order,
    rounded to uint8 in between; Pillow < 13 always resamples horizontally first, so it can
    differ where `vertical_first` holds). float results equal Pillow mode "F" up to float32
    rounding.
    Pillow's own RGBA resize premultiplies alpha; this one does not (channels are independent).

    Pillow equivalent: ``Image.fromarray(img).resize((width, height), Image.BILINEAR)``
    (note Pillow's size order is (width, height)).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, "
                         f"got {method!r}")
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                       for s in size)):
        raise ValueError(f"size must be a (height, width) pair of ints, got {size!r}")
    height, width = int(size[0]), int(size[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive, got (height, width) = {(height, width)}; "
                         "an output image needs at least one pixel")
    src = io.as_image(img, layout, device)
    passes = [(axis, new) for axis, new, old in ((0, width, src.width), (1, height, src.height))
              if new != old] or [(0, width)]  # same size: one unit-weight pass is the copy
    if vertical_first(src.height, src.width, height, width):
        passes.reverse()
    current = src
    for i, (axis, new) in enumerate(passes):
        # The intermediate is float32 holding Pillow's rounded uint8 values (or floats).
        u8 = src.u8 and i == len(passes) - 1
        out = io.like(current, **{"width" if axis == 0 else "height": new}, u8=u8)
        _pass(current, out, axis, method, fixed=src.u8)
        current = out
    return io.result(current)
