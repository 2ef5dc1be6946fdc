"""DPM++ SDE (k-diffusion 0.1.1 `sample_dpmpp_sde`): stochastic DPM-Solver++ with a substep at
t + r h, in t = -log(sigma). The WebUI feeds it Brownian-tree noise (registry: brownian_noise)."""

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

__all__ = ["sample_dpmpp_sde"]


def _sigma(t: float) -> float:
    return math.exp(-t)


@register("DPM++ SDE", "dpmpp_sde", ("k_dpmpp_sde", "dpmpp_sde_gpu"),
          default_schedule="Karras", second_order=True, brownian_noise=True, stochastic=True,
          extra_params=("s_noise",))
def sample_dpmpp_sde(model: Denoise, x: np.ndarray, sigmas: Sigmas, *,
                     noise: NoiseSampler | None = None, callback: Callback | None = None,
                     eta: float = 1.0, s_noise: float = 1.0, r: float = 1 / 2) -> np.ndarray:
    """Two model calls per step; noise is drawn for the substep (sigma -> sigma(s)) and the step
    (sigma -> sigma_next), with the sigmas recomputed from t as k-diffusion passes them."""
    x, sigmas = prepare(x, sigmas)
    noise = require_noise(noise, "DPM++ SDE", needed=eta > 0)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
        else:
            t, t_next = -math.log(sigmas[i]), -math.log(sigmas[i + 1])
            h = t_next - t
            s = t + h * r
            fac = 1 / (2 * r)
            # 1. ancestral substep to t + r h
            sd, su = ancestral_step(_sigma(t), _sigma(s), eta)
            s_ = -math.log(sd)
            x_2 = (_sigma(s_) / _sigma(t)) * x - math.expm1(t - s_) * denoised
            if eta > 0:
                x_2 = x_2 + noise(_sigma(t), _sigma(s)) * s_noise * su
            denoised_2 = model(x_2, _sigma(s))
            # 2. the full step with the blended x0 prediction
            sd, su = ancestral_step(_sigma(t), _sigma(t_next), eta)
            t_next_ = -math.log(sd)
            denoised_d = (1 - fac) * denoised + fac * denoised_2
            x = (_sigma(t_next_) / _sigma(t)) * x - math.expm1(t - t_next_) * denoised_d
            if eta > 0:
                x = x + noise(_sigma(t), _sigma(t_next)) * s_noise * su
        if stop_requested(callback, i, x):
            break
    return x
