"""Separable resampling as torch's `F.interpolate` (bilinear, bicubic without antialias) and
OpenCV's `cv2.resize` (INTER_LINEAR, INTER_CUBIC) compute it: each axis one (out, in) matrix of
weights, built here in float64, applied on the GPU as two matrix products.

(Pillow's antialiased filters are gpustd.image.resize; these are the unfiltered ones the DPT
models and their preprocessing were trained with.)"""

from __future__ import annotations

import numpy as np

from gpustd import Tensor, asarray, matmul

__all__ = ["bilinear_matrix", "cubic_matrix", "resample"]

_A = -0.75  # torch's and OpenCV's bicubic parameter


def bilinear_matrix(size_in: int, size_out: int, *, align_corners: bool) -> np.ndarray:
    """(out, in) weights of torch's bilinear interpolation along one axis (align_corners=False
    is also cv2.INTER_LINEAR when upscaling)."""
    i = np.arange(size_out, dtype=np.float64)
    if align_corners:
        src = i * ((size_in - 1) / (size_out - 1)) if size_out > 1 else np.zeros_like(i)
    else:
        src = np.maximum((i + 0.5) * (size_in / size_out) - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    frac = src - low
    weights = np.zeros((size_out, size_in))
    np.add.at(weights, (np.arange(size_out), low), 1.0 - frac)
    np.add.at(weights, (np.arange(size_out), high), frac)
    return weights


def cubic_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(out, in) weights of torch's bicubic interpolation (align_corners=False, no antialias)
    and cv2.INTER_CUBIC: Keys' cubic with a = -0.75, edge pixels repeated."""
    i = np.arange(size_out, dtype=np.float64)
    src = (i + 0.5) * (size_in / size_out) - 0.5
    base = np.floor(src)
    t = src - base
    near = lambda x: ((_A + 2) * x - (_A + 3)) * x * x + 1  # noqa: E731
    far = lambda x: ((_A * x - 5 * _A) * x + 8 * _A) * x - 4 * _A  # noqa: E731
    taps = (far(t + 1), near(t), near(1 - t), far(2 - t))
    weights = np.zeros((size_out, size_in))
    for offset, weight in zip((-1, 0, 1, 2), taps):
        index = np.clip(base.astype(np.int64) + offset, 0, size_in - 1)
        np.add.at(weights, (np.arange(size_out), index), weight)
    return weights


def resample(x: Tensor, rows: np.ndarray, cols: np.ndarray) -> Tensor:
    """x (B, C, H, W) resampled to (B, C, H', W'): rows (H', H) and cols (W', W) weights (from
    the functions above). torch: `F.interpolate(x, (H', W'), ...)`."""
    b, c, h, w = x.shape
    (out_h, in_h), (out_w, in_w) = rows.shape, cols.shape
    if (in_h, in_w) != (h, w):
        raise ValueError(f"resample: weights for {in_h}x{in_w}, picture {h}x{w}")
    if out_w != w or not np.array_equal(cols, np.eye(w)):
        x = matmul(x.reshape(b * c * h, w), asarray(cols.astype(x.dtype), device=x.device),
                   trans_b=True).reshape(b, c, h, out_w)
    if out_h != h or not np.array_equal(rows, np.eye(h)):
        x = matmul(asarray(rows.astype(x.dtype), device=x.device),
                   x.reshape(b * c, h, out_w)).reshape(b, c, out_h, out_w)
    return x
