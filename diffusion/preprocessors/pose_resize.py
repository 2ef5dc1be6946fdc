"""The openpose annotators' resizes (`smart_resize`, `smart_resize_k`: cv2.resize with
INTER_AREA shrinking and INTER_LANCZOS4 enlarging, channel by channel) in numpy: OpenCV's
taps and edge handling (edges repeated), in float64. Float maps equal cv2's to float32 error;
uint8 pictures are rounded as it rounds them: enlarged exactly (its 11-bit fixed-point Lanczos
taps, integer sums, one rounding), halved exactly, other shrinks within a level
(diffusion.preprocessors.resize)."""

from __future__ import annotations

import numpy as np

from .resize import resize

__all__ = ["axis_weights", "smart_resize", "smart_resize_k"]


def _lanczos4(size_in: int, size_out: int, fixed: bool = False) -> np.ndarray:
    """(size_out, size_in) weights of cv2's INTER_LANCZOS4 along one axis (with `fixed`: as
    the int64 taps times 2048 it uses for uint8 pictures)."""
    scale = 1.0 / (size_out / size_in)
    out = np.zeros((size_out, size_in))
    rows = np.arange(size_out)
    centre = ((rows + 0.5) * scale - 0.5).astype(np.float32)  # OpenCV keeps it in float
    base = np.floor(centre).astype(int)
    frac = centre - base.astype(np.float32)
    s45 = 0.70710678118654752440084436210485
    cs = ((1, 0), (-s45, -s45), (0, 1), (s45, -s45), (-1, 0), (s45, s45), (0, -1), (-s45, s45))
    # interpolateLanczos4's arithmetic: float32 offsets, double sines, a float32 running sum
    shifted = frac + np.float32(3)
    y0 = (-shifted).astype(np.float64) * np.pi * 0.25
    sin0, cos0 = np.sin(y0), np.cos(y0)
    coeffs = np.zeros((size_out, 8), np.float32)
    total = np.zeros(size_out, np.float32)
    for i, (a, b) in enumerate(cs):
        offset = shifted - np.float32(i)
        y = (-offset).astype(np.float64) * np.pi * 0.25
        with np.errstate(divide="ignore", invalid="ignore"):
            value = ((a * sin0 + b * cos0) / (y * y)).astype(np.float32)
        coeffs[:, i] = np.where(np.abs(offset) >= np.float32(1e-6), value, np.float32(1e30))
        total += coeffs[:, i]
    coeffs *= (np.float32(1) / total)[:, None]
    if fixed:
        coeffs = np.rint(coeffs * np.float32(_COEF_SCALE)).astype(np.int64)
        out = out.astype(np.int64)
    for tap in range(8):
        np.add.at(out, (rows, np.clip(base + tap - 3, 0, size_in - 1)), coeffs[:, tap])
    return out


_COEF_SCALE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE


def _area(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) weights of cv2's INTER_AREA shrinking along one axis."""
    scale = size_in / size_out
    starts = np.arange(size_out)[:, None] * scale
    left = np.arange(size_in)[None, :]
    overlap = np.minimum(starts + scale, left + 1) - np.maximum(starts, left)
    return np.clip(overlap, 0, None) / scale


def _resize(x: np.ndarray, width: int, height: int, area: bool) -> np.ndarray:
    if x.dtype == np.uint8 and area:
        if x.shape[:2] == (2 * height, 2 * width):  # cv2's exact halving: (sum + 2) >> 2
            total = x.reshape(height, 2, width, 2, -1).astype(np.int32).sum(axis=(1, 3))
            return ((total + 2) >> 2).astype(np.uint8).reshape(height, width, *x.shape[2:])
        return resize(x, (width, height), "area")
    if x.dtype == np.uint8:
        rows, cols = _lanczos4(x.shape[0], height, True), _lanczos4(x.shape[1], width, True)
        # integer taps and pixels: float64 products and sums stay exact (below 2**31) and
        # take BLAS
        total = _product(rows.astype(np.float64), x, cols.astype(np.float64)).astype(np.int64)
        half = 1 << 21  # two passes of 11 fraction bits, rounded once
        return np.clip((total + half) >> 22, 0, 255).astype(np.uint8)
    weights = _area if area else _lanczos4
    rows, cols = weights(x.shape[0], height), weights(x.shape[1], width)
    return _product(rows, x, cols).astype(x.dtype)


def _product(rows: np.ndarray, x: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """rows @ x @ cols.T over x's first two axes (HxW or HxWxC), in float64."""
    down = np.tensordot(rows, x.astype(np.float64), axes=(1, 0))
    return np.moveaxis(np.tensordot(down, cols, axes=(1, 1)), -1, 1)


def axis_weights(size_in: int, size_out: int, *, shrink: bool) -> np.ndarray:
    """(size_out, size_in) float64 weights of one axis of a float map's resize: OpenCV's
    INTER_AREA (shrink) or INTER_LANCZOS4 taps, edges repeated."""
    return _area(size_in, size_out) if shrink else _lanczos4(size_in, size_out)


def smart_resize(x: np.ndarray, size: tuple[float, float]) -> np.ndarray:
    """x (HxW or HxWxC) at size (height, width): area shrinking, Lanczos enlarging (by the
    sum of the sides). controlnet_aux: `open_pose.util.smart_resize`."""
    height, width = size
    k = float(height + width) / float(x.shape[0] + x.shape[1])
    return _resize(x, int(width), int(height), k < 1)


def smart_resize_k(x: np.ndarray, fx: float, fy: float) -> np.ndarray:
    """x scaled by fx, fy. controlnet_aux: `open_pose.util.smart_resize_k`."""
    height, width = x.shape[0] * fy, x.shape[1] * fx
    k = float(height + width) / float(x.shape[0] + x.shape[1])
    return _resize(x, int(width), int(height), k < 1)
