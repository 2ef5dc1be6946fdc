"""Sana's resolution binning, as diffusers' SanaPipeline and SanaSprintPipeline do it by
default (`use_resolution_binning=True`): the size asked is drawn at the aspect-ratio bin of
the transformer's sample size nearest to it (PixArt's tables), the picture then resized
(bilinear) to cover the size asked and cropped at its centre.

The tables: ASPECT_RATIO_512_BIN and _1024_BIN (sample sizes 16 and 32) are one grid in
units of 32 and 64 pixels, _2048_BIN and _4096_BIN (64 and 128) another in units of 128 and
256; a unit is twice the sample size, each bin's ratio its height / width to two places.

    binned_size(32, 720, 1280)  # (768, 1344), as diffusers' classify_height_width_bin
"""

from __future__ import annotations

import numpy as np

__all__ = ["binned_size", "resize_and_crop"]

# (height, width) in units; ascending ratio, as diffusers' dicts (a tie goes to the first)
_GRID_1024 = ((8, 32), (8, 29), (9, 28), (9, 27), (9, 26), (10, 25), (10, 24), (11, 23),
              (11, 22), (11, 21), (12, 21), (12, 20), (13, 19), (13, 18), (14, 18), (14, 17),
              (15, 17), (15, 16), (16, 16), (16, 15), (17, 15), (17, 14), (18, 14), (18, 13),
              (19, 13), (20, 12), (21, 12), (22, 11), (23, 11), (24, 10), (25, 10), (27, 9),
              (32, 8))
_GRID_4096 = ((8, 32), (8, 31), (8, 30), (8, 29), (9, 28), (9, 27), (9, 26), (10, 25),
              (10, 24), (11, 23), (11, 22), (11, 21), (12, 21), (12, 20), (13, 19), (13, 18),
              (14, 18), (14, 17), (15, 17), (15, 16), (16, 16), (16, 15), (17, 15), (17, 14),
              (18, 14), (18, 13), (19, 13), (20, 12), (21, 12), (22, 11), (23, 11), (24, 10),
              (25, 10), (26, 9), (27, 9), (28, 9), (29, 8), (30, 8), (31, 8), (32, 8))
_GRIDS = {16: _GRID_1024, 32: _GRID_1024, 64: _GRID_4096, 128: _GRID_4096}


def binned_size(sample_size: int, height: int, width: int) -> tuple[int, int] | None:
    """The (height, width) in pixels diffusers draws a picture of height x width at for a
    transformer of `sample_size` latents, or None where diffusers has no table for it (it
    raises there; here the size asked is drawn). diffusers:
    `PixArtImageProcessor.classify_height_width_bin(height, width, ASPECT_RATIO_..._BIN)`."""
    grid = _GRIDS.get(int(sample_size))
    if grid is None:
        return None
    ratio = height / width
    unit = 2 * int(sample_size)
    h, w = min(grid, key=lambda hw: abs(round(hw[0] / hw[1], 2) - ratio))
    return h * unit, w * unit


def resize_and_crop(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """`images` (B, C, H, W) scaled by one factor to cover height x width (bilinear, half-
    pixel centres, no antialiasing) and cropped at the centre. diffusers:
    `PixArtImageProcessor.resize_and_crop_tensor(images, width, height)` (torch's
    `F.interpolate(mode="bilinear", align_corners=False)`)."""
    in_h, in_w = images.shape[2:]
    if (in_h, in_w) == (height, width):
        return images
    ratio = max(height / in_h, width / in_w)
    out_h, out_w = int(in_h * ratio), int(in_w * ratio)
    top, left = (out_h - height) // 2, (out_w - width) // 2
    rows = [a[top:top + height] for a in _taps(in_h, out_h)]
    cols = [a[left:left + width] for a in _taps(in_w, out_w)]
    # rows, then columns: each output a weighted pair of input samples
    x = (images[:, :, rows[0]] * rows[2][:, None] + images[:, :, rows[1]] * rows[3][:, None])
    out = x[..., cols[0]] * cols[2] + x[..., cols[1]] * cols[3]
    return out.astype(images.dtype)


def _taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                np.ndarray]:
    """torch's bilinear taps along one axis: (low index, high index, low weight, high
    weight) of each output sample, its source (i + 0.5) * in / out - 0.5 clamped at 0."""
    scale = np.float32(size_in / size_out)
    source = np.maximum((np.arange(size_out, dtype=np.float32) + 0.5) * scale - 0.5, 0)
    low = np.minimum(source.astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    frac = (source - low).astype(np.float32)
    return low, high, 1 - frac, frac
