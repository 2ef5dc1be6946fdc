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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["COLORFIX_MODULES", "ColorFix", "box_blur", "colorfix_prediction"]

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
