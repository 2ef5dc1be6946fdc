"""DPM2 and DPM2 ancestral (k-diffusion 0.1.1 `sample_dpm_2`, `sample_dpm_2_ancestral`).

The WebUI runs both with the penultimate sigma discarded (registry: discard_next_to_last_sigma).
"""

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
    log_lerp_half,
    prepare,
    require_noise,
    stop_requested,
    to_d,
)
from .euler import euler_step
from .registry import CHURN_OPTIONS, register

__all__ = ["sample_dpm_2", "sample_dpm_2_ancestral"]


def _midpoint_step(model: Denoise, x: np.ndarray, d: np.ndarray, sigma: float,
                   sigma_to: float) -> np.ndarray:
    """DPM-Solver-2 in sigma: the slope at the geometric midpoint carries x from sigma to
    sigma_to."""
    sigma_mid = log_lerp_half(sigma, sigma_to)
    x_2 = x + d * (sigma_mid - sigma)
    d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid))
    return x + d_2 * (sigma_to - sigma)


def _dpm2_step(model: Denoise, x: np.ndarray, sigma: float, sigma_next: float) -> np.ndarray:
    """DPM2's step from sigma to sigma_next: Euler's on the last one (to 0), else the
    midpoint's."""
    if sigma_next == 0:
        return euler_step(model, x, sigma, sigma_next)
    return _midpoint_step(model, x, to_d(x, sigma, model(x, sigma)), sigma, sigma_next)


@register("DPM2", "dpm_2", ("k_dpm_2",), default_schedule="Karras",
          discard_next_to_last_sigma=True, second_order=True, extra_params=CHURN_OPTIONS)
def sample_dpm_2(model: Denoise, x: np.ndarray, sigmas: Sigmas, *,
                 noise: NoiseSampler | None = None, callback: Callback | None = None,
                 s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf,
                 s_noise: float = 1.0) -> np.ndarray:
    """DPM-Solver-2 steps inside Karras et al. (2022) Algorithm 2; Euler on the last step."""
    return churned_steps(_dpm2_step, model, x, sigmas, sampler="DPM2", noise=noise,
                         callback=callback, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax,
                         s_noise=s_noise)

@register("DPM2 a", "dpm_2_ancestral", ("k_dpm_2_a",), default_schedule="Karras",
          discard_next_to_last_sigma=True, uses_ensd=True, second_order=True, stochastic=True,
          extra_params=("s_noise",))
def sample_dpm_2_ancestral(model: Denoise, x: np.ndarray, sigmas: Sigmas, *,
                           noise: NoiseSampler | None = None, callback: Callback | None = None,
                           eta: float = 1.0, s_noise: float = 1.0) -> np.ndarray:
    """DPM-Solver-2 steps down to sigma_down, then noise of std sigma_up ("DPM2 a")."""
    x, sigmas = prepare(x, sigmas)
    noise = require_noise(noise, "DPM2 a", needed=eta > 0)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        d = to_d(x, sigma, denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigma)
        else:
            x = _midpoint_step(model, x, d, sigma, sigma_down)
            if eta > 0:
                x = x + noise(sigma, sigma_next) * s_noise * sigma_up
        if stop_requested(callback, i, x):
            break
    return x
