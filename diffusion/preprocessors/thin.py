"""The ControlNet extension's edge thinning, for black-and-white maps of one-pixel edges that
were resized (canny, lineart): `nake_nms` keeps each pixel that is a maximum along one of four
directions, `lvmin_thin` peels edge pixels by eight hit-or-miss patterns until none matches,
then prunes spurs. numpy restatements of scripts/lvminthin.py (Lvmin Zhang, "High Quality
Edge Thinning using Pure Python"), which runs them through OpenCV's morphology: borders count
as background for dilation and match anything for erosion, as OpenCV's defaults."""

from __future__ import annotations

import numpy as np

__all__ = ["dilate", "erode", "is_one_pixel_edge", "lvmin_thin", "nake_nms"]

_THIN = [np.array([[-1, -1, -1], [0, 1, 0], [1, 1, 1]]),
         np.array([[0, -1, -1], [1, 1, -1], [0, 1, 0]])]
_PRUNE = [np.array([[-1, -1, -1], [-1, 1, -1], [0, 0, -1]]),
          np.array([[-1, -1, -1], [-1, 1, -1], [-1, 0, 0]])]
# each pattern turned by 0, 90, 180 and 270 degrees, in the extension's order
THIN_KERNELS = [np.rot90(k, turns) for turns in range(4) for k in _THIN]
PRUNE_KERNELS = [np.rot90(k, turns) for turns in range(4) for k in _PRUNE]
_LINES = [np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]]), np.array([[0, 1, 0]] * 3),
          np.eye(3, dtype=int), np.fliplr(np.eye(3, dtype=int))]


def _windows(x: np.ndarray, fill: int) -> np.ndarray:
    """(3, 3, H, W, ...): x shifted so [i, j] holds x[y + i - 1, x + j - 1] (fill outside)."""
    padded = np.pad(x, [(1, 1), (1, 1)] + [(0, 0)] * (x.ndim - 2), constant_values=fill)
    height, width = x.shape[:2]
    return np.stack([np.stack([padded[i:i + height, j:j + width] for j in range(3)])
                     for i in range(3)])


def dilate(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """cv2.dilate(x, kernel): the largest value under the kernel's ones."""
    shifted = _windows(x, 0)
    return shifted[kernel.astype(bool)].max(axis=0)


def erode(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """cv2.erode(x, kernel): the smallest value under the kernel's ones."""
    shifted = _windows(x, 255)
    return shifted[kernel.astype(bool)].min(axis=0)


def _hit_or_miss(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """cv2.morphologyEx(x, MORPH_HITMISS, kernel) > 127 for a 0/255 image."""
    hit = erode(x, kernel == 1)
    miss = erode(255 - x, kernel == -1)
    return (hit & miss) > 127


def _thin_once(x: np.ndarray, kernels: list[np.ndarray]) -> bool:
    """One pass of the patterns over x, in place; whether any pixel was removed."""
    changed = False
    for kernel in kernels:
        found = _hit_or_miss(x, kernel)
        if found.any():
            x[found] = 0
            changed = True
    return changed


def lvmin_thin(x: np.ndarray, *, prunings: bool = True) -> np.ndarray:
    """The thinned 0/255 uint8 image (the extension's `lvmin_thin`)."""
    y = x.copy()
    for _ in range(32):
        if not _thin_once(y, THIN_KERNELS):
            break
    if prunings:
        _thin_once(y, PRUNE_KERNELS)
    return y


def nake_nms(x: np.ndarray) -> np.ndarray:
    """x where a pixel is the largest of its line in one of four directions, else 0."""
    y = np.zeros_like(x)
    for line in _LINES:
        keep = dilate(x, line) == x
        y[keep] = x[keep]
    return y


def is_one_pixel_edge(x: np.ndarray) -> bool:
    """Whether most of a black-and-white map's white is thin lines: an opening (erode, then
    dilate, 3x3) takes away more than half of it (the extension's test)."""
    square = np.ones((3, 3), int)
    opened = dilate(erode(x, square), square)
    return int((opened < x).sum()) * 2 > int((x > 127).sum())
