"""Heun (k-diffusion 0.1.1 `sample_heun`) and Heun++ 2 (ComfyUI `sample_heunpp2`)."""

from __future__ import annotations

import math

import numpy as np

from ._common import (
    Callback,
    Denoise,
    NoiseSampler,
    Sigmas,
    churn,
    churned_steps,
    prepare,
    require_noise,
    stop_requested,
    to_d,
)
from .registry import CHURN_OPTIONS, register

__all__ = ["heun_step", "sample_heun", "sample_heunpp2"]


def heun_step(model: Denoise, x: np.ndarray, sigma: float, sigma_next: float) -> np.ndarray:
    """One step of Heun's method from sigma to sigma_next (Euler when sigma_next is 0)."""
    # 1. slope at sigma, 2. Euler predictor
    d = to_d(x, sigma, model(x, sigma))
    dt = sigma_next - sigma
    if sigma_next == 0:
        return x + d * dt
    # 3. slope at the predicted point, 4. trapezoidal corrector
    x_2 = x + d * dt
    d_2 = to_d(x_2, sigma_next, model(x_2, sigma_next))
    return x + (d + d_2) / 2 * dt


@register("Heun", "heun", ("k_heun",), second_order=True, extra_params=CHURN_OPTIONS)
def sample_heun(model: Denoise, x: np.ndarray, sigmas: Sigmas, *,
                noise: NoiseSampler | None = None, callback: Callback | None = None,
                s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf,
                s_noise: float = 1.0) -> np.ndarray:
    """Karras et al. (2022) Algorithm 2: Heun's second-order steps, Euler on the last step."""
    return churned_steps(heun_step, model, x, sigmas, sampler="Heun", noise=noise,
                         callback=callback, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax,
                         s_noise=s_noise)

@register("HeunPP2", "heunpp2", ("Heun++ 2", "Heun++"), second_order=True,
          extra_params=CHURN_OPTIONS)
def sample_heunpp2(model: Denoise, x: np.ndarray, sigmas: Sigmas, *,
                   noise: NoiseSampler | None = None, callback: Callback | None = None,
                   s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf,
                   s_noise: float = 1.0) -> np.ndarray:
    """Heun++ (ComfyUI, from Carzit/sd-webui-samplers-scheduler): a slope average over up to three
    points, weighted by sigma / (k * sigmas[0]); Heun-like one step before the end, Euler last."""
    x, sigmas = prepare(x, sigmas)
    noise = require_noise(noise, "HeunPP2 with s_churn > 0", needed=s_churn > 0)
    s_end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        x, sigma_hat = churn(x, sigmas, i, noise, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax,
                             s_noise=s_noise)
        d = to_d(x, sigma_hat, model(x, sigma_hat))
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == s_end:
            # 1. last step: Euler
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1]))
            if sigmas[i + 2] == s_end:
                # 2. one step before the end: two slopes
                w2 = sigmas[i + 1] / (2 * sigmas[0])
                d_prime = d * (1 - w2) + d_2 * w2
            else:
                # 3. otherwise: a third slope one step further
                x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
                d_3 = to_d(x_3, sigmas[i + 2], model(x_3, sigmas[i + 2]))
                w2 = sigmas[i + 1] / (3 * sigmas[0])
                w3 = sigmas[i + 2] / (3 * sigmas[0])
                d_prime = (1 - w2 - w3) * d + w2 * d_2 + w3 * d_3
            x = x + d_prime * dt
        if stop_requested(callback, i, x):
            break
    return x
