"""DDPM ancestral sampling (Ho et al. 2020, eqs. 11-12) in k-diffusion form, as ComfyUI runs it
(`sample_ddpm`): each step maps sigma to the VP variable x / sqrt(1 + sigma^2), takes the
posterior-mean step with alphas derived from the two sigmas, adds posterior noise, and maps
back."""

from __future__ import annotations

import math

import numpy as np

from ._common import Callback, Denoise, NoiseSampler, Sigmas, prepare, require_noise, stop_requested
from .registry import register

__all__ = ["sample_ddpm"]


@register("DDPM", "ddpm", stochastic=True, uses_ensd=True)
def sample_ddpm(model: Denoise, x: np.ndarray, sigmas: Sigmas, *,
                noise: NoiseSampler | None = None,
                callback: Callback | None = None) -> np.ndarray:
    """One model call and (but into 0) one noise draw per step."""
    x, sigmas = prepare(x, sigmas)
    noise = require_noise(noise, "DDPM", needed=any(s > 0 for s in sigmas[1:]))
    for i in range(len(sigmas) - 1):
        sigma, sigma_prev = sigmas[i], sigmas[i + 1]
        eps = (x - model(x, sigma)) / sigma
        # 1. VP variables: alpha_bar = 1 / (1 + sigma^2) at both ends, alpha = their ratio
        x_vp = x / math.sqrt(1.0 + sigma**2)
        alpha_cumprod = 1 / (sigma * sigma + 1)
        alpha_cumprod_prev = 1 / (sigma_prev * sigma_prev + 1)
        alpha = alpha_cumprod / alpha_cumprod_prev
        # 2. posterior mean, 3. posterior noise
        mu = math.sqrt(1.0 / alpha) * (x_vp - (1 - alpha) * eps / math.sqrt(1 - alpha_cumprod))
        if sigma_prev > 0:
            std = math.sqrt((1 - alpha) * (1.0 - alpha_cumprod_prev) / (1.0 - alpha_cumprod))
            mu = mu + std * noise(sigma, sigma_prev)
            # 4. back to the k-diffusion variable
            mu = mu * math.sqrt(1.0 + sigma_prev**2)
        x = mu
        if stop_requested(callback, i, x):
            break
    return x
