"""The ControlNet extension's tile_colorfix and tile_colorfix+sharp: with a tile ControlNet,
the unit's map is the picture as it is, and after every UNet call the noise prediction is
corrected so that the predicted picture's low frequencies are the control picture's (its VAE
latents), as the extension's scripts/hook.py does it:

    x0  = sqrt(1 / abar_t) * x_t - sqrt(1 / abar_t - 1) * eps          (predicted x0)
    x0  = x0 - blur(x0, k) + blur(latent, k)                           (k: the Variation)
    +sharp, unconditional rows only (a detail weight d = Sharpness / 100):
    x0  = d * blur(x0, k) + (1 - d) * x0
    eps' = (sqrt(1 / abar_t) * x_t - x0) / sqrt(1 / abar_t - 1)
    eps  = w * eps' + (1 - w) * eps                                    (w: the weight in [0, 1])

`blur` is a (2k + 1)-square box mean over the edge-replicated latents; t is the call's
timestep rounded to a whole one; in a hires fix's second pass k is doubled.

    fix = ColorFix(variation=8, sharpness=1.0)
    eps = colorfix_prediction(eps, x_t, t, latent, alphas_cumprod, fix, weight=1.0,
                              uncond_rows=1)

In a pipeline, `colorfix_hook(units, ...)` gives the pass's hook (its units' pictures fitted
to the pass's size and VAE-encoded once: the posterior's mean, where the extension draws a
sample), called on every UNet call's output. As in the extension, the correction acts at every
step, whatever the unit's guidance start and end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..preprocessors.resize import fit_map
from ..sampling.model_sampling import make_betas

__all__ = ["COLORFIX_MODULES", "ColorFix", "ColorFixHook", "box_blur", "colorfix_hook",
           "colorfix_prediction"]

COLORFIX_MODULES = ("tile_colorfix", "tile_colorfix+sharp")


@dataclass(frozen=True)
class ColorFix:
    """A colorfix unit's sliders: `variation` the blur's radius in latent pixels (the
    extension's threshold_a, 3..32), `sharpness` the +sharp variant's (threshold_b, 0..2),
    None for plain tile_colorfix."""

    variation: int = 8
    sharpness: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.variation, int) and self.variation >= 0):
            raise ValueError(f"tile_colorfix's Variation must be a whole number >= 0, got "
                             f"{self.variation!r}")
        if self.sharpness is not None and not math.isfinite(self.sharpness):
            raise ValueError(f"tile_colorfix+sharp's Sharpness must be a finite number, got "
                             f"{self.sharpness!r}")


def box_blur(x: np.ndarray, k: int) -> np.ndarray:
    """The mean over each (2k + 1)-square window of `x` (..., H, W), its edges replicated:
    torch's avg_pool2d(pad(x, (k, k, k, k), mode="replicate"), 2k + 1, stride=1), in
    float64."""
    x = np.asarray(x, np.float64)
    if k == 0:
        return x.copy()
    padded = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(k, k), (k, k)], mode="edge")
    sums = np.cumsum(np.cumsum(padded, axis=-2), axis=-1)
    sums = np.pad(sums, [(0, 0)] * (x.ndim - 2) + [(1, 0), (1, 0)])
    size = 2 * k + 1
    h, w = x.shape[-2:]
    window = (sums[..., size:size + h, size:size + w] - sums[..., :h, size:size + w]
              - sums[..., size:size + h, :w] + sums[..., :h, :w])
    return window / (size * size)


def colorfix_prediction(eps: np.ndarray, x_t: np.ndarray, t: float, latent: np.ndarray,
                        alphas_cumprod: np.ndarray, fix: ColorFix, *, weight: float,
                        uncond_rows: int, hires: bool = False) -> np.ndarray:
    """The noise prediction `eps` (B, C, h, w) of a UNet call on `x_t` (its input, the
    sampler's scaled latents) at timestep `t`, with the predicted x0's low frequencies swapped
    for `latent`'s (the control picture's VAE latents, (1 or B, C, h, w)); the first
    `uncond_rows` rows are the unconditional ones (+sharp blurs their x0). `hires`: a hires
    fix's second pass (the blur twice as wide)."""
    # the timestep rounded half to even, as torch.round
    abar = float(np.asarray(alphas_cumprod)[round(float(t))])
    recip, recip_m1 = math.sqrt(1.0 / abar), math.sqrt(1.0 / abar - 1.0)
    k = fix.variation * (2 if hires else 1)
    x0 = recip * x_t - recip_m1 * eps
    x0 = x0 - box_blur(x0, k) + box_blur(np.broadcast_to(latent, x0.shape), k)
    if fix.sharpness is not None:
        detail = float(fix.sharpness) * 0.01
        x0 = x0.copy()
        rows = x0[:uncond_rows]
        x0[:uncond_rows] = detail * box_blur(rows, k) + (1 - detail) * rows
    fixed = (recip * x_t - x0) / recip_m1
    w = max(0.0, min(1.0, float(weight)))
    return fixed * w + eps * (1 - w)


class ColorFixUnit(Protocol):
    """What the hook reads of a control unit (a diffusion.pipelines.control.ControlUnit)."""

    image: Any
    weight: float
    resize_mode: str
    hr_option: str
    colorfix: ColorFix | None


class ColorFixHook:
    """The colorfix units of a pass: `encode` pixels (1, 3, H, W) in [-1, 1] -> the UNet's
    latents; `size` the pass's (width, height); `hires` whether it is a hires fix's second."""

    def __init__(self, units: Sequence[ColorFixUnit], *, size: tuple[int, int],
                 encode: Callable[[np.ndarray], np.ndarray], alphas_cumprod: np.ndarray,
                 hires: bool = False) -> None:
        self.units = list(units)
        self.size = size
        self.encode = encode
        self.alphas_cumprod = np.asarray(alphas_cumprod, np.float64)
        self.hires = hires
        self._latents: dict[int, np.ndarray] = {}

    def __call__(self, eps: np.ndarray, x_t: np.ndarray, t: float, *,
                 uncond_rows: int) -> np.ndarray:
        """A UNet call's output `eps` on `x_t` at timestep `t`, corrected by every unit (an
        inpainting UNet's input: its latent channels, as the extension's inpaint hijack)."""
        x_t = x_t[:, :eps.shape[1]]
        for index, unit in enumerate(self.units):
            assert unit.colorfix is not None  # colorfix_hook took only these
            eps = colorfix_prediction(eps, x_t, t, self._latent(index, unit),
                                      self.alphas_cumprod, unit.colorfix,
                                      weight=unit.weight, uncond_rows=uncond_rows,
                                      hires=self.hires)
        return eps

    def _latent(self, index: int, unit: ColorFixUnit) -> np.ndarray:
        if index not in self._latents:
            width, height = self.size
            image = np.asarray(unit.image)
            if image.dtype == np.uint8:
                image = fit_map(image, width, height, unit.resize_mode)
                pixels = image.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
            else:  # a float map in [0, 1], (H, W, 3) or (B, 3, H, W), of the pass's size
                pixels = image.transpose(2, 0, 1)[None] if image.ndim == 3 else image[:1]
            self._latents[index] = np.asarray(self.encode(
                np.asarray(pixels, np.float32) * 2 - 1), np.float64)
        return self._latents[index]


def colorfix_hook(units: Sequence[ColorFixUnit], *, size: tuple[int, int],
                  encode: Callable[[np.ndarray], np.ndarray],
                  scheduler_config: Mapping[str, Any], hires_stage: str | None = None
                  ) -> ColorFixHook | None:
    """The hook of the control units `units` whose `colorfix` is set (None when none is), for
    a pass of `size`; `hires_stage` "first" or "second" of a hires fix (units pick theirs by
    hr_option; the second blurs twice as wide)."""
    skip = {"first": "High res only", "second": "Low res only"}.get(hires_stage or "")
    fixes = [unit for unit in units if unit.colorfix is not None and unit.hr_option != skip]
    if not fixes:
        return None
    abar = np.cumprod(1.0 - make_betas(scheduler_config).astype(np.float32), dtype=np.float32)
    return ColorFixHook(fixes, size=size, encode=encode, alphas_cumprod=abar,
                        hires=hires_stage == "second")
