"""Euler and Euler ancestral (k-diffusion 0.1.1 `sample_euler`, `sample_euler_ancestral`)."""

from __future__ import annotations

import math

import numpy as np

from ._common import (
    Callback,
    Denoise,
    NoiseSampler,
    Sigmas,
    ancestral_step,
    churned_steps,
    prepare,
    require_noise,
    stop_requested,
    to_d,
)
from .registry import CHURN_OPTIONS, register

__all__ = ["euler_step", "sample_euler", "sample_euler_ancestral", "sample_euler_ancestral_rf"]


def euler_step(model: Denoise, x: np.ndarray, sigma: float, sigma_next: float) -> np.ndarray:
    """One Euler step from sigma to sigma_next along the slope at sigma."""
    return x + to_d(x, sigma, model(x, sigma)) * (sigma_next - sigma)


@register("Euler", "euler", ("k_euler",), extra_params=CHURN_OPTIONS)
def sample_euler(model: Denoise, x: np.ndarray, sigmas: Sigmas, *,
                 noise: NoiseSampler | None = None, callback: Callback | None = None,
                 s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf,
                 s_noise: float = 1.0) -> np.ndarray:
    """Karras et al. (2022) Algorithm 2 with Euler steps; stochastic only when s_churn > 0."""
    return churned_steps(euler_step, model, x, sigmas, sampler="Euler", noise=noise,
                         callback=callback, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax,
                         s_noise=s_noise)

@register("Euler a", "euler_ancestral", ("k_euler_a", "k_euler_ancestral"), uses_ensd=True,
          stochastic=True)
def sample_euler_ancestral(model: Denoise, x: np.ndarray, sigmas: Sigmas, *,
                           noise: NoiseSampler | None = None, callback: Callback | None = None,
                           eta: float = 1.0, s_noise: float = 1.0) -> np.ndarray:
    """Euler steps down to sigma_down, then fresh noise of std sigma_up ("Euler a")."""
    x, sigmas = prepare(x, sigmas)
    noise = require_noise(noise, "Euler a", needed=eta > 0)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        # 1. predicted x0, 2. split the step into a deterministic and a noise part
        denoised = model(x, sigma)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        # 3. Euler step to sigma_down, 4. add noise up to sigma_next
        x = x + to_d(x, sigma, denoised) * (sigma_down - sigma)
        if sigma_next > 0 and eta > 0:
            x = x + noise(sigma, sigma_next) * s_noise * sigma_up
        if stop_requested(callback, i, x):
            break
    return x


def sample_euler_ancestral_rf(model: Denoise, x: np.ndarray, sigmas: Sigmas, *,
                              noise: NoiseSampler | None = None,
                              callback: Callback | None = None, eta: float = 1.0,
                              s_noise: float = 1.0) -> np.ndarray:
    """"Euler a" for flow-matching models (x = (1 - sigma) x0 + sigma noise; sigmas in
    [0, 1]), as ComfyUI runs it for them (its `sample_euler_ancestral_RF`): an Euler step to
    sigma_down, then the signal rescaled to sigma_next's and fresh noise added to reach it.
    k-diffusion's own Euler a assumes x = x0 + sigma noise and is not defined here."""
    x, sigmas = prepare(x, sigmas)
    noise = require_noise(noise, "Euler a", needed=eta > 0)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        # 1. predicted x0
        denoised = model(x, sigma)
        if sigma_next == 0:
            x = denoised
        else:
            # 2. the step split into a deterministic part to sigma_down and re-noising
            sigma_down = sigma_next * (1 + (sigma_next / sigma - 1) * eta)
            alpha_next, alpha_down = 1 - sigma_next, 1 - sigma_down
            renoise = math.sqrt(max(sigma_next**2 - sigma_down**2 * alpha_next**2
                                    / alpha_down**2, 0.0))
            # 3. Euler step to sigma_down, 4. signal to alpha_next, noise up to sigma_next
            ratio = sigma_down / sigma
            x = ratio * x + (1 - ratio) * denoised
            if eta > 0:
                x = (alpha_next / alpha_down) * x + noise(sigma, sigma_next) * s_noise * renoise
        if stop_requested(callback, i, x):
            break
    return x
