"""DPM++ 2S ancestral (k-diffusion 0.1.1 `sample_dpmpp_2s_ancestral`): DPM-Solver++(2S)
(Lu et al. 2022, arXiv:2211.01095) single-step second order in data prediction, t = -log(sigma)."""

from __future__ import annotations

import math

import numpy as np

from ._common import (
    Callback,
    Denoise,
    NoiseSampler,
    Sigmas,
    ancestral_step,
    prepare,
    require_noise,
    stop_requested,
    to_d,
)
from .registry import register

__all__ = ["dpmpp_2s_step", "sample_dpmpp_2s_ancestral"]


def dpmpp_2s_step(model: Denoise, x: np.ndarray, sigma: float, sigma_to: float,
                  denoised: np.ndarray) -> np.ndarray:
    """One DPM-Solver++(2S) step from sigma to sigma_to > 0, evaluating the model at the
    midpoint in t."""
    t, t_next = -math.log(sigma), -math.log(sigma_to)
    h = t_next - t
    s = t + h / 2
    x_2 = (math.exp(-s) / math.exp(-t)) * x - math.expm1(-h / 2) * denoised
    denoised_2 = model(x_2, math.exp(-s))
    return (math.exp(-t_next) / math.exp(-t)) * x - math.expm1(-h) * denoised_2


@register("DPM++ 2S a", "dpmpp_2s_ancestral", ("k_dpmpp_2s_a",), default_schedule="Karras",
          uses_ensd=True, second_order=True, stochastic=True, extra_params=("s_noise",))
def sample_dpmpp_2s_ancestral(model: Denoise, x: np.ndarray, sigmas: Sigmas, *,
                              noise: NoiseSampler | None = None,
                              callback: Callback | None = None, eta: float = 1.0,
                              s_noise: float = 1.0) -> np.ndarray:
    """DPM-Solver++(2S) steps down to sigma_down, then noise of std sigma_up."""
    x, sigmas = prepare(x, sigmas)
    noise = require_noise(noise, "DPM++ 2S a", needed=eta > 0)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        # 1. predicted x0, 2. ancestral split
        denoised = model(x, sigma)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        # 3. the deterministic part (Euler to 0 on the last step), 4. noise
        if sigma_down == 0:
            x = x + to_d(x, sigma, denoised) * (sigma_down - sigma)
        else:
            x = dpmpp_2s_step(model, x, sigma, sigma_down, denoised)
        if sigma_next > 0 and eta > 0:
            x = x + noise(sigma, sigma_next) * s_noise * sigma_up
        if stop_requested(callback, i, x):
            break
    return x
