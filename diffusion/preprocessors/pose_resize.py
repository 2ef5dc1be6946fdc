"""The openpose annotators' resizes (`smart_resize`, `smart_resize_k`: cv2.resize with
INTER_AREA shrinking and INTER_LANCZOS4 enlarging, channel by channel) in numpy: OpenCV's
taps and edge handling (edges repeated), in float64. Float maps equal cv2's to float32 error;
uint8 pictures are rounded as it rounds them (a halving exactly, other shrinks within a
level: diffusion.preprocessors.resize)."""

from __future__ import annotations

import numpy as np

from .resize import resize

__all__ = ["smart_resize", "smart_resize_k"]


def _lanczos4(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) weights of cv2's INTER_LANCZOS4 along one axis."""
    scale = size_in / size_out
    out = np.zeros((size_out, size_in))
    rows = np.arange(size_out)
    centre = ((rows + 0.5) * scale - 0.5).astype(np.float32)  # OpenCV keeps it in float
    base = np.floor(centre).astype(int)
    frac = (centre - base).astype(np.float64)
    taps = np.arange(8)
    y = -(frac[:, None] + 3 - taps[None, :]) * np.pi / 4
    s45 = np.sqrt(0.5)
    cs = np.array([[1, 0], [-s45, -s45], [0, 1], [s45, -s45], [-1, 0], [s45, s45], [0, -1],
                   [-s45, s45]])
    y0 = -(frac + 3) * np.pi / 4
    with np.errstate(divide="ignore", invalid="ignore"):  # frac 0: replaced below
        coeffs = (cs[None, :, 0] * np.sin(y0)[:, None]
                  + cs[None, :, 1] * np.cos(y0)[:, None]) / (y * y)
        coeffs = coeffs.astype(np.float32)
        coeffs = coeffs * (np.float32(1) / coeffs.sum(axis=1, dtype=np.float32))[:, None]
    exact = frac < np.finfo(np.float32).eps
    coeffs[exact] = 0
    coeffs[exact, 3] = 1
    for tap in range(8):
        np.add.at(out, (rows, np.clip(base + tap - 3, 0, size_in - 1)), coeffs[:, tap])
    return out


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
    weights = _area if area else _lanczos4
    rows, cols = weights(x.shape[0], height), weights(x.shape[1], width)
    out = np.einsum("yh,hw...,xw->yx...", rows, x.astype(np.float64), cols, optimize=True)
    if x.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(x.dtype)


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
