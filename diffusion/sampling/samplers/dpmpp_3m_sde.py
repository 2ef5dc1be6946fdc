"""DPM++ 3M SDE (k-diffusion 0.1.1 `sample_dpmpp_3m_sde`): third-order multistep SDE solver in
data prediction. The WebUI feeds it Brownian-tree noise and drops the penultimate sigma."""

from __future__ import annotations

import math

import numpy as np

from ._common import Callback, Denoise, NoiseSampler, Sigmas, prepare, require_noise, stop_requested
from .registry import register

__all__ = ["sample_dpmpp_3m_sde"]


@register("DPM++ 3M SDE", "dpmpp_3m_sde", ("k_dpmpp_3m_sde", "dpmpp_3m_sde_gpu"),
          default_schedule="Exponential", discard_next_to_last_sigma=True, brownian_noise=True,
          stochastic=True, extra_params=("s_noise",))
def sample_dpmpp_3m_sde(model: Denoise, x: np.ndarray, sigmas: Sigmas, *,
                        noise: NoiseSampler | None = None, callback: Callback | None = None,
                        eta: float = 1.0, s_noise: float = 1.0) -> np.ndarray:
    """Orders 1, 2, 3 as history accumulates; the step to sigma = 0 returns the prediction."""
    x, sigmas = prepare(x, sigmas)
    noise = require_noise(noise, "DPM++ 3M SDE", needed=bool(eta))
    denoised_1 = denoised_2 = None
    h = h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma) - math.log(sigma_next)
            h_eta = h * (eta + 1)
            # 1. first-order step
            x = math.exp(-h_eta) * x - math.expm1(-h_eta) * denoised
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            if h_2 is not None:
                # 2a. third order: first and second divided differences of x0 in t
                assert h_1 is not None and denoised_1 is not None and denoised_2 is not None
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                # 2b. second order
                x = x + phi_2 * (denoised - denoised_1) / (h_1 / h)
            # 3. fresh noise
            if eta:
                x = x + (noise(sigma, sigma_next) * sigma_next
                         * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise)
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
        if stop_requested(callback, i, x):
            break
    return x
