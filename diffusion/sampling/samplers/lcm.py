"""LCM (Luo et al. 2023; the WebUI's `modules/sd_samplers_lcm.py` `sample_lcm`, = ComfyUI's):
jump to the predicted x0, then re-noise it to the next sigma with fresh noise.

The LCM boundary-condition scalings (c_skip, c_out) belong to the denoiser, not to this loop.
"""

from __future__ import annotations

import numpy as np

from ._common import Callback, Denoise, NoiseSampler, Sigmas, prepare, require_noise, stop_requested
from .registry import register

__all__ = ["sample_lcm"]


@register("LCM", "lcm", ("k_lcm",), stochastic=True)
def sample_lcm(model: Denoise, x: np.ndarray, sigmas: Sigmas, *,
               noise: NoiseSampler | None = None,
               callback: Callback | None = None) -> np.ndarray:
    """x <- D(x, sigma) + sigma_next * noise(sigma, sigma_next) each step (no noise into 0)."""
    x, sigmas = prepare(x, sigmas)
    noise = require_noise(noise, "LCM", needed=any(s > 0 for s in sigmas[1:]))
    for i in range(len(sigmas) - 1):
        # 1. consistency jump to x0, 2. forward-noise to the next level
        x = model(x, sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise(sigmas[i], sigmas[i + 1])
        if stop_requested(callback, i, x):
            break
    return x
