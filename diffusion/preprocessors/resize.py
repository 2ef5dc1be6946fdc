"""How the ControlNet extension sizes control pictures and maps: its resize modes, pixel
perfect, the processor resolution, and the "high quality" map resize of `detectmap_proc`.

    mode = resize_mode("Crop and Resize")        # names, the old aliases, or 0 / 1 / 2 (3: 0)
    res = pixel_perfect_resolution(picture, 512, 768, mode)
    control = fit_map(detected, 512, 768, mode)  # uint8 HxWx3 at the pass's size

| mode | the map ... |
|---|---|
| Just Resize | stretched to width x height |
| Crop and Resize | scaled to cover width x height, the middle cut out |
| Resize and Fill | scaled to fit inside, the borders filled with the median border colour |

The geometry (scales, rounding, offsets) and the choice of interpolation are the extension's
(scripts/controlnet.py `detectmap_proc`, scripts/utils.py `resize_image_with_pad`); the
resampling is OpenCV's (`INTER_AREA` shrinking, `INTER_CUBIC` with a = -0.75 enlarging,
`INTER_NEAREST` for maps of few colours; its taps, not its fixed-point arithmetic) written in
numpy, equal to cv2.resize within one
level. Black-and-white maps stay so as there: Otsu's threshold after resizing, and maps of
one-pixel edges (canny) thinned back to one pixel (diffusion.preprocessors.thin).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .thin import is_one_pixel_edge, lvmin_thin, nake_nms

__all__ = ["RESIZE_MODES", "fit_map", "pixel_perfect_resolution", "resize", "resize_mode",
           "resize_with_pad"]

RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
_ALIASES = {"inner fit (scale to fit)": "Crop and Resize",
            "scale to fit (inner fit)": "Crop and Resize",
            "outer fit (shrink to fit)": "Resize and Fill",
            "envelope (outer fit)": "Resize and Fill",
            "just resize (latent upscale)": "Just Resize"}


def resize_mode(value: Any) -> str:
    """The extension's resize mode named by `value`: a name (any case, its old aliases) or its
    number (0 Just Resize, 1 Crop and Resize, 2 Resize and Fill, 3 latent: Just Resize)."""
    if isinstance(value, bool):
        raise ValueError(f"resize_mode {value!r}: give a name or 0, 1, 2")
    if isinstance(value, (int, np.integer)):
        if 0 <= value <= 3:
            return RESIZE_MODES[0 if value == 3 else int(value)]
    elif isinstance(value, str):
        text = value.strip().lower()
        by_lower = {mode.lower(): mode for mode in RESIZE_MODES}
        if text in by_lower or text in _ALIASES:
            return by_lower.get(text) or _ALIASES[text]
        if text.isdigit():
            return resize_mode(int(text))
    raise ValueError(f"resize_mode {value!r}: expected one of {', '.join(RESIZE_MODES)} "
                     "(or 0, 1, 2)")


def _cubic(t: np.ndarray) -> np.ndarray:
    """OpenCV's cubic convolution kernel (a = -0.75)."""
    a, t = -0.75, np.abs(t)
    return np.where(t <= 1, ((a + 2) * t - (a + 3)) * t * t + 1,
                    np.where(t < 2, ((a * t - 5 * a) * t + 8 * a) * t - 4 * a, 0.0))


def _weights(size_in: int, size_out: int, how: str) -> np.ndarray:
    """(size_out, size_in) interpolation weights along one axis, as cv2.resize's."""
    scale = size_in / size_out
    out = np.zeros((size_out, size_in))
    rows = np.arange(size_out)
    if how == "nearest":
        out[rows, np.minimum(np.floor(rows * scale).astype(int), size_in - 1)] = 1
    elif how == "area":
        starts = rows[:, None] * scale
        left = np.arange(size_in)[None, :]
        overlap = np.minimum(starts + scale, left + 1) - np.maximum(starts, left)
        out = np.clip(overlap, 0, None) / scale
    elif how == "area_zoom":  # INTER_AREA when either side grows: OpenCV's own linear taps
        source = np.floor(rows * scale).astype(int)
        frac = (rows + 1) - (source + 1) / scale
        frac = np.where(frac <= 0, 0.0, frac - np.floor(frac))
        np.add.at(out, (rows, np.clip(source, 0, size_in - 1)), 1 - frac)
        np.add.at(out, (rows, np.clip(source + 1, 0, size_in - 1)), frac)
    else:  # cubic
        centre = (rows + 0.5) * scale - 0.5
        base = np.floor(centre).astype(int)
        for tap in range(-1, 3):
            index = np.clip(base + tap, 0, size_in - 1)
            np.add.at(out, (rows, index), _cubic(centre - (base + tap)))
    return out


def resize(image: np.ndarray, size: tuple[int, int], how: str) -> np.ndarray:
    """uint8 HxWxC `image` resized to `size` (width, height) by "area", "cubic" or "nearest"
    (cv2.resize with INTER_AREA / INTER_CUBIC / INTER_NEAREST)."""
    width, height = size
    if image.shape[:2] == (height, width):
        return image
    if how == "area" and (width > image.shape[1] or height > image.shape[0]):
        how = "area_zoom"
    rows = _weights(image.shape[0], height, how)
    cols = _weights(image.shape[1], width, how)
    pixels = np.einsum("yh,hwc,xw->yxc", rows, image.astype(np.float64), cols, optimize=True)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def resize_with_pad(image: np.ndarray, resolution: int
                    ) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """The extension's `resize_image_with_pad`: the short side scaled to `resolution` (cubic
    enlarging, area shrinking), edges repeated to a multiple of 64; and the function that cuts
    a map of the padded picture back to the scaled size."""
    height, width = image.shape[:2]
    k = float(resolution) / float(min(height, width))
    target_h, target_w = int(np.round(height * k)), int(np.round(width * k))
    scaled = resize(image, (target_w, target_h), "cubic" if k > 1 else "area")
    pad_h, pad_w = -target_h % 64, -target_w % 64
    padded = np.pad(scaled, [[0, pad_h], [0, pad_w], [0, 0]], mode="edge")

    def remove_pad(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x[:target_h, :target_w])

    return padded, remove_pad


def pixel_perfect_resolution(image: np.ndarray, height: int, width: int, mode: str) -> int:
    """The processor resolution that makes the map as large as the generated picture needs
    (the extension's `pixel_perfect_resolution`): the short side scaled as `mode` scales."""
    raw_h, raw_w = image.shape[:2]
    k0, k1 = height / raw_h, width / raw_w
    k = min(k0, k1) if mode == RESIZE_MODES[2] else max(k0, k1)
    return int(np.round(k * min(raw_h, raw_w)))


def _otsu(gray: np.ndarray) -> np.ndarray:
    """cv2.threshold(gray, 0, 255, THRESH_BINARY + THRESH_OTSU)'s image."""
    counts = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256)
    weight0 = np.cumsum(counts)
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(counts * levels)
    mean0 = sum0 / np.maximum(weight0, 1e-12)
    mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1e-12)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return np.where(gray > int(np.argmax(between)), 255, 0).astype(np.uint8)


def _interpolation(colours: int, x: np.ndarray, size: tuple[int, int]) -> str:
    if 2 < colours < 200:
        return "nearest"
    return "area" if size[0] * size[1] < x.shape[0] * x.shape[1] else "cubic"


def _quality_resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The extension's `high_quality_resize`: nearest for maps of a few colours (segments),
    area shrinking, cubic enlarging; a black-and-white map stays black and white. An inpaint
    map (RGBA, the mask in alpha) has its mask resized as its colours and cut at 127."""
    width, height = size
    if x.shape[2] == 4:
        colour, mask = x[:, :, :3], x[:, :, 3:]
        if x.shape[:2] != (height, width):
            colours = len(np.unique(colour.reshape(-1, 3), axis=0))
            mask = resize(mask, size, _interpolation(colours, colour, size))
            colour = _quality_resize(colour, size)
        return np.concatenate([colour, np.where(mask > 127, 255, 0).astype(np.uint8)], axis=2)
    if x.shape[:2] == (height, width):
        return x
    colours = len(np.unique(x.reshape(-1, x.shape[2]), axis=0))
    binary = colours == 2 and x.min() < 16 and x.max() > 240
    thin = binary and is_one_pixel_edge(x)
    bigger = width * height > x.shape[0] * x.shape[1]
    y = resize(x, size, _interpolation(colours, x, size))
    if binary:
        gray = np.clip(y.astype(np.float32).mean(axis=2), 0, 255).astype(np.uint8)
        if thin:  # one-pixel edges stay one pixel wide
            gray = lvmin_thin(_otsu(nake_nms(gray)), prunings=bigger)
        else:
            gray = _otsu(gray)
        y = np.repeat(gray[:, :, None], 3, axis=2)
    return y


def fit_map(detected: np.ndarray, width: int, height: int, mode: str) -> np.ndarray:
    """A detected map (uint8 HxWx3, or HxWx4: an inpaint map, its mask in alpha) at width x
    height by resize mode `mode` (the extension's `detectmap_proc`; Resize and Fill masks the
    borders it adds, for outpainting)."""
    mode = resize_mode(mode)
    if mode == RESIZE_MODES[0]:
        return _quality_resize(detected, (width, height))
    old_h, old_w = detected.shape[:2]
    k0, k1 = height / old_h, width / old_w
    if mode == RESIZE_MODES[2]:
        k = min(k0, k1)
        borders = np.concatenate([detected[0], detected[-1], detected[:, 0], detected[:, -1]])
        colour = np.median(borders, axis=0).astype(detected.dtype)
        if len(colour) == 4:
            colour[3] = 255
        out = np.tile(colour[None, None], (height, width, 1))
        scaled = _quality_resize(detected, (int(np.round(old_w * k)), int(np.round(old_h * k))))
        new_h, new_w = scaled.shape[:2]
        top, left = max(0, (height - new_h) // 2), max(0, (width - new_w) // 2)
        out[top:top + new_h, left:left + new_w] = scaled[:height - top, :width - left]
        return out
    k = max(k0, k1)
    scaled = _quality_resize(detected, (int(np.round(old_w * k)), int(np.round(old_h * k))))
    new_h, new_w = scaled.shape[:2]
    top, left = max(0, (new_h - height) // 2), max(0, (new_w - width) // 2)
    return np.ascontiguousarray(scaled[top:top + height, left:left + width])
