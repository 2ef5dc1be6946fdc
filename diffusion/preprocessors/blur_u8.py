"""OpenCV's `cv2.GaussianBlur` of a uint8 picture, byte for byte, in numpy integers: its
bit-exact fixed-point path (the one OpenCV takes for uint8 pictures), not a float blur.

1. the kernel: Gaussian weights in double, normalized, then turned into 8-bit fixed point
   by error diffusion from the outer taps inwards, the centre tap taking what is left so
   that they sum to exactly 256 (`getGaussianKernelFixedPoint_ED`);
2. rows: each pixel times the taps, summed (8 fraction bits, exact in integers);
3. columns: those sums times the taps (16 fraction bits), rounded half up to uint8.
Edges are mirrored without repeating the edge pixel (BORDER_REFLECT_101).

    blurred = gaussian_blur_u8(picture, 0.8)   # cv2.GaussianBlur(picture, (0, 0), 0.8)
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["fixed_point_kernel", "gaussian_blur_u8"]

_BITS = 8


def fixed_point_kernel(size: int, sigma: float) -> np.ndarray:
    """The int64 taps (summing to 256) OpenCV blurs uint8 pictures with for an odd `size`
    and `sigma` > 0."""
    half = (size - 1) // 2
    scale = -0.125 / (sigma * sigma)
    values = [math.exp(float(x * x) * scale) for x in range(1 - size, 0, 2)]
    total = 2.0 * sum(values) + 1.0
    weights = [v * (1.0 / total) for v in values]
    taps = np.zeros(size, np.int64)
    error = 0.0
    for i, weight in enumerate(weights):
        adjusted = weight * (1 << _BITS) + error
        taps[i] = taps[size - 1 - i] = round(adjusted)
        error = adjusted - float(taps[i])
    taps[half] = (1 << _BITS) - 2 * int(taps[:half].sum())
    return taps


def _taps_along(x: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    radius = len(taps) // 2
    size = x.shape[axis]
    padded = np.pad(x, [(radius, radius) if a == axis else (0, 0) for a in range(x.ndim)],
                    mode="reflect")
    out = np.zeros_like(x)
    for i, tap in enumerate(taps):
        out += int(tap) * np.take(padded, np.arange(i, i + size), axis=axis)
    return out


def gaussian_blur_u8(image: np.ndarray, sigma: float) -> np.ndarray:
    """`cv2.GaussianBlur(image, (0, 0), sigma)` of a uint8 HxW or HxWxC picture (the kernel
    size OpenCV picks for uint8: round(6 sigma + 1), made odd), equal to its bytes; both
    sides longer than the kernel's radius."""
    if image.dtype != np.uint8 or sigma <= 0:
        raise ValueError(f"gaussian_blur_u8: a uint8 picture and sigma > 0, got {image.dtype}"
                         f" and {sigma}")
    size = round(sigma * 6 + 1) | 1  # cvRound, then odd
    taps = fixed_point_kernel(size, sigma)
    if min(image.shape[:2]) <= size // 2:
        raise ValueError(f"gaussian_blur_u8: a {image.shape[1]}x{image.shape[0]} picture is "
                         f"narrower than the blur's reach ({size // 2} pixels)")
    rows = _taps_along(image.astype(np.int64), taps, 1)
    both = _taps_along(rows, taps, 0)
    return np.clip((both + (1 << (2 * _BITS - 1))) >> (2 * _BITS), 0, 255).astype(np.uint8)
