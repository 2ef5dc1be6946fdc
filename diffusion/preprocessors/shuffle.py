"""`shuffle`: the ControlNet extension's content shuffle (ContentShuffleDetector), a picture's
pixels moved by a smooth random flow, for the shuffle ControlNet. In numpy, as OpenCV 5
computes it:

1. two noise fields (x, then y): uniform noise on a grid 256 pixels apart, enlarged with
   bicubic taps (cv2.resize INTER_CUBIC of float64), cut to the picture, scaled to 0..1
   and then to the picture's width - 1 and height - 1;
2. the picture read at those points, bilinear in float32 (cv2.remap INTER_LINEAR), black
   past the edges, rounded half to even.

The noise is numpy's legacy generator seeded with `seed` (the extension seeds numpy's global
one with the generation's seed + subseed before it preprocesses), so a seed gives the
extension's map; None: fresh noise each call.

    shuffled = shuffle(picture, seed=1234)   # uint8 HxWx3
"""

from __future__ import annotations

import numpy as np

from gpucore import Device

__all__ = ["cubic_weights", "noise_disk", "remap_linear", "shuffle"]

_CELL = 256


def cubic_weights(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) weights of cv2.resize's INTER_CUBIC along one axis (A = -0.75,
    float32 taps, edges repeated)."""
    scale = 1.0 / (size_out / size_in)
    rows = np.arange(size_out)
    centre = ((rows + 0.5) * scale - 0.5).astype(np.float32)
    base = np.floor(centre).astype(int)
    x = centre - base.astype(np.float32)
    a = np.float32(-0.75)
    one = np.float32(1)
    x1, y1 = x + one, one - x
    taps = np.zeros((size_out, 4), np.float32)
    taps[:, 0] = ((a * x1 - 5 * a) * x1 + 8 * a) * x1 - 4 * a
    taps[:, 1] = ((a + 2) * x - (a + 3)) * x * x + one
    taps[:, 2] = ((a + 2) * y1 - (a + 3)) * y1 * y1 + one
    taps[:, 3] = one - taps[:, 0] - taps[:, 1] - taps[:, 2]
    out = np.zeros((size_out, size_in))
    for tap in range(4):
        np.add.at(out, (rows, np.clip(base + tap - 1, 0, size_in - 1)), taps[:, tap])
    return out


def noise_disk(rng: np.random.RandomState, height: int, width: int) -> np.ndarray:
    """annotator.util.make_noise_disk(height, width, 1, 256) of the extension: smooth noise,
    float64 HxW scaled to 0..1."""
    cells = rng.uniform(low=0, high=1, size=(height // _CELL + 2, width // _CELL + 2))
    rows = cubic_weights(cells.shape[0], height + 2 * _CELL)
    cols = cubic_weights(cells.shape[1], width + 2 * _CELL)
    noise = (rows @ (cells @ cols.T))[_CELL:_CELL + height, _CELL:_CELL + width]
    noise -= np.min(noise)
    noise /= np.max(noise)
    return noise


def remap_linear(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """cv2.remap(image, (map_x, map_y), None, INTER_LINEAR) of a uint8 HxWxC picture with
    float32 HxW maps: bilinear in float32, 0 past the edges."""
    height, width = image.shape[:2]
    x0, y0 = np.floor(map_x).astype(np.int64), np.floor(map_y).astype(np.int64)
    ax = (map_x - x0.astype(np.float32))[..., None]
    ay = (map_y - y0.astype(np.float32))[..., None]

    def at(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        pixels = image[np.clip(rows, 0, height - 1), np.clip(cols, 0, width - 1)]
        return np.where(inside[..., None], pixels.astype(np.float32), np.float32(0))

    top_left, top_right = at(y0, x0), at(y0, x0 + 1)
    low_left, low_right = at(y0 + 1, x0), at(y0 + 1, x0 + 1)
    top = top_left + ax * (top_right - top_left)
    low = low_left + ax * (low_right - low_left)
    return np.clip(np.rint(top + ay * (low - top)), 0, 255).astype(np.uint8)


def shuffle(image: np.ndarray, *, seed: int | None = None,
            device: Device | None = None) -> np.ndarray:
    """The extension's shuffle map of a uint8 HxWx3 picture (see the module docstring)."""
    height, width = image.shape[:2]
    rng = np.random.RandomState(seed)
    x = noise_disk(rng, height, width) * float(width - 1)
    y = noise_disk(rng, height, width) * float(height - 1)
    return remap_linear(image, x.astype(np.float32), y.astype(np.float32))
