"""DPM++ 2M (k-diffusion 0.1.1 `sample_dpmpp_2m`): DPM-Solver++(2M), multistep second order in
data prediction (Lu et al. 2022, arXiv:2211.01095), t = -log(sigma)."""

from __future__ import annotations

import math

import numpy as np

from ._common import Callback, Denoise, NoiseSampler, Sigmas, prepare, stop_requested
from .registry import register

__all__ = ["sample_dpmpp_2m"]


@register("DPM++ 2M", "dpmpp_2m", ("k_dpmpp_2m",), default_schedule="Karras")
def sample_dpmpp_2m(model: Denoise, x: np.ndarray, sigmas: Sigmas, *,
                    noise: NoiseSampler | None = None,
                    callback: Callback | None = None) -> np.ndarray:
    """First step and last step (to sigma = 0) first order; the rest extrapolate x0 linearly in t
    from the previous prediction."""
    x, sigmas = prepare(x, sigmas)
    old_denoised = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if sigma_next == 0:
            # exp(-h) = 0: the step lands on the prediction
            x = denoised
        else:
            h = math.log(sigma) - math.log(sigma_next)
            if old_denoised is None:
                denoised_d = denoised
            else:
                # 1. step ratio r = h_last / h, 2. x0 extrapolated to the midpoint
                r = (math.log(sigmas[i - 1]) - math.log(sigma)) / h
                denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            # 3. the exponential-integrator update
            x = (sigma_next / sigma) * x - math.expm1(-h) * denoised_d
        old_denoised = denoised
        if stop_requested(callback, i, x):
            break
    return x
