"""Hires fix's upscalers, as the WebUI names them: latent interpolation and image resizing.

Latent upscalers resize the latents with torch's `F.interpolate` rules (the WebUI calls it),
written here in numpy as separable interpolation matrices:

- bilinear, align_corners=False: source x = (x' + 0.5) * in / out - 0.5, clamped at 0;
- bicubic: the same source position, Keys' cubic with A = -0.75, edge samples repeated;
- nearest: floor(x' * in / out); nearest-exact: floor((x' + 0.5) * in / out).

With antialias, bilinear and bicubic use torch's `_upsample_*_aa` kernels (Pillow's: normalized
taps, bicubic with A = -0.5), widened by the scale when shrinking. Image upscalers resize the
decoded picture with Pillow (the WebUI's Lanczos and Nearest; "None" ends in a Lanczos resize
there too).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["IMAGE_UPSCALERS", "LATENT_UPSCALERS", "HiresFix", "crop_latents", "upscale_image",
           "upscale_latents"]

# WebUI name -> (torch interpolate mode, antialias); its `shared.latent_upscale_modes`
LATENT_UPSCALERS = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
IMAGE_UPSCALERS = {"Lanczos": "LANCZOS", "Nearest": "NEAREST", "None": "LANCZOS"}


@dataclass(frozen=True)
class HiresFix:
    """The WebUI's hires fix: a second img2img pass at a larger size.

    `scale` multiplies the first pass's size unless `resize` gives (width, height); `upscaler`
    is a latent upscaler ("Latent", ...), an image one ("Lanczos", "Nearest", "None") or a
    registered model upscaler ("R-ESRGAN 4x+", see `models.register_upscaler_dir`);
    `steps` 0 runs as many steps as the first pass; `denoise` is the second pass's denoising
    strength. `prompt`, `negative_prompt`, `sampler` and `scheduler` are the second pass's own
    (the WebUI's hr_prompt, hr_negative_prompt, hr_sampler_name, hr_scheduler); None: the
    first pass's."""

    scale: float = 2.0
    resize: tuple[int, int] | None = None
    upscaler: str = "Latent"
    steps: int = 0
    denoise: float = 0.7
    prompt: str | None = None
    negative_prompt: str | None = None
    sampler: str | None = None
    scheduler: str | None = None

    def __post_init__(self) -> None:
        from .models import MODEL_UPSCALERS

        names = [*LATENT_UPSCALERS, *IMAGE_UPSCALERS, *MODEL_UPSCALERS]
        if self.upscaler not in names:
            close = difflib.get_close_matches(str(self.upscaler), names, n=1)
            guess = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown hires upscaler {self.upscaler!r}{guess}; use one of: "
                             f"{', '.join(names)}")
        if not (math.isfinite(self.scale) and 1.0 <= self.scale <= 8.0):
            raise ValueError(f"hires scale must be from 1 to 8, got {self.scale}")
        if not 0.0 < self.denoise <= 1.0:
            raise ValueError(f"hires denoising strength must be in (0, 1], got {self.denoise}")
        if not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"hires steps must be a whole number >= 0 (0: as many as the "
                             f"first pass), got {self.steps!r}")
        for name in ("prompt", "negative_prompt", "sampler", "scheduler"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"hires {name.replace('_', ' ')} must be text or None (the "
                                 f"first pass's), got {type(value).__name__}")

    @property
    def own_settings(self) -> bool:
        """Whether the second pass has a prompt or sampler of its own."""
        return any(value is not None for value in (self.prompt, self.negative_prompt,
                                                   self.sampler, self.scheduler))

    def schedule_steps(self, first_steps: int) -> tuple[int, int]:
        """(the steps the hires pass runs, the schedule they are the last of): `steps`, or the
        first pass's, and those stretched by 1 / denoise (the WebUI's setup_img2img_steps)."""
        steps = self.steps or first_steps
        return steps, int(steps / min(self.denoise, 0.999))

    @property
    def is_latent(self) -> bool:
        return self.upscaler in LATENT_UPSCALERS

    def target(self, width: int, height: int) -> tuple[int, int]:
        """The second pass's size: `resize`, else the first size times `scale`, each side
        rounded down to a multiple of 8 (the VAE's block)."""
        if self.resize is not None:
            w, h = self.resize
        else:
            w, h = int(width * self.scale), int(height * self.scale)
        w, h = w // 8 * 8, h // 8 * 8
        if w < 8 or h < 8:
            raise ValueError(f"hires size {w}x{h} is too small; give at least 8x8")
        return w, h

    def cover(self, width: int, height: int) -> tuple[int, int]:
        """The size the first pass is enlarged to: `target`, except for a `resize` of another
        aspect ratio than the first pass's, which the WebUI fills without stretching: the
        picture is enlarged to cover it and the latents' overflow is cropped around the
        centre (`crop_latents`; its truncate_x/y)."""
        w, h = self.target(width, height)
        if self.resize is None:
            return w, h
        x, y = self.resize
        if width * y < x * height:  # wider target: fit the width, crop the height
            return w, max(h, x * height // width // 8 * 8)
        return max(w, y * width // height // 8 * 8), h


def _cubic(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys' cubic convolution kernel at distances t (torch's bicubic, A = -0.75)."""
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _matrix(size_in: int, size_out: int, mode: str, antialias: bool) -> np.ndarray:
    """(size_out, size_in) weights: row i is output sample i as a mix of the input samples."""
    scale = size_in / size_out
    out = np.arange(size_out)
    weights = np.zeros((size_out, size_in))
    if mode in ("nearest", "nearest-exact"):
        offset = 0.5 if mode == "nearest-exact" else 0.0
        source = np.minimum(np.floor((out + offset) * scale).astype(int), size_in - 1)
        weights[out, source] = 1.0
        return weights
    if antialias:  # torch's separable AA kernels (PIL's): widened by the scale when shrinking
        stretch = max(scale, 1.0)
        support = (1.0 if mode == "bilinear" else 2.0) * stretch
        for i in out:
            center = scale * (i + 0.5)
            lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5),
                                                              size_in)
            x = (np.arange(lo, hi) - center + 0.5) / stretch
            w = np.maximum(1 - np.abs(x), 0) if mode == "bilinear" else _cubic(x, -0.5)
            weights[i, lo:hi] = w / w.sum()
        return weights
    source = (out + 0.5) * scale - 0.5
    if mode == "bilinear":
        source = np.maximum(source, 0)
        low = np.floor(source).astype(int)
        high = np.minimum(low + 1, size_in - 1)
        frac = source - low
        np.add.at(weights, (out, low), 1 - frac)
        np.add.at(weights, (out, high), frac)
        return weights
    if mode == "bicubic":
        low = np.floor(source).astype(int)
        frac = source - low
        for k in range(-1, 3):
            taps = np.clip(low + k, 0, size_in - 1)
            np.add.at(weights, (out, taps), _cubic(frac - k))
        return weights
    raise ValueError(f"unknown interpolation mode {mode!r}")


def upscale_latents(latents: np.ndarray, size: tuple[int, int], upscaler: str) -> np.ndarray:
    """Latents (B, C, H, W) resized to `size` (height, width) by latent upscaler `upscaler`
    ("Latent", "Latent (bicubic antialiased)", ...), as the WebUI's F.interpolate call."""
    mode, antialias = LATENT_UPSCALERS[upscaler]
    rows = _matrix(latents.shape[2], size[0], mode, antialias)
    cols = _matrix(latents.shape[3], size[1], mode, antialias)
    return np.einsum("ih,bchw,jw->bcij", rows, np.asarray(latents, np.float64), cols)


def crop_latents(latents: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Latents (B, C, H, W) cropped to `size` (height, width) around the centre, as the WebUI
    truncates hires latents enlarged to cover a `resize` (HiresFix.cover)."""
    top, left = (latents.shape[2] - size[0]) // 2, (latents.shape[3] - size[1]) // 2
    return latents[:, :, top:top + size[0], left:left + size[1]]


def upscale_image(image: np.ndarray, size: tuple[int, int], upscaler: str,
                  device: Any = None) -> np.ndarray:
    """An (H, W, 3) uint8 picture resized to `size` (width, height) by image upscaler
    `upscaler` ("Lanczos", "Nearest", "None"), with Pillow as the WebUI does, or by a model
    upscaler from `--upscaler-dir` ("R-ESRGAN 4x+", "4x-UltraSharp": `models.MODEL_UPSCALERS`)
    on `device` (the pipeline's gpucore Device; None: the upscaler's)."""
    from PIL import Image

    from .models import MODEL_UPSCALERS

    if upscaler in MODEL_UPSCALERS:
        return MODEL_UPSCALERS[upscaler].upscale_to(image, size, device)
    resample = getattr(Image.Resampling, IMAGE_UPSCALERS[upscaler])
    return np.asarray(Image.fromarray(image).resize(size, resample=resample))
