"""DPM++ 2M SDE and DPM++ 2M SDE Heun (k-diffusion 0.1.1 `sample_dpmpp_2m_sde` with
solver_type 'midpoint' / 'heun'). The WebUI feeds them Brownian-tree noise."""

from __future__ import annotations

import math

import numpy as np

from ._common import Callback, Denoise, NoiseSampler, Sigmas, prepare, require_noise, stop_requested
from .registry import register

__all__ = ["sample_dpmpp_2m_sde", "sample_dpmpp_2m_sde_heun"]


@register("DPM++ 2M SDE", "dpmpp_2m_sde", ("k_dpmpp_2m_sde", "dpmpp_2m_sde_gpu"),
          default_schedule="Exponential", brownian_noise=True, stochastic=True,
          extra_params=("s_noise",))
@register("DPM++ 2M SDE Heun", "dpmpp_2m_sde_heun",
          ("k_dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu"), default_schedule="Exponential",
          brownian_noise=True, stochastic=True, options={"solver_type": "heun"},
          extra_params=("s_noise",))
def sample_dpmpp_2m_sde(model: Denoise, x: np.ndarray, sigmas: Sigmas, *,
                        noise: NoiseSampler | None = None, callback: Callback | None = None,
                        eta: float = 1.0, s_noise: float = 1.0,
                        solver_type: str = "midpoint") -> np.ndarray:
    """Second-order multistep SDE solver; eta = 0 makes it the ODE solver DPM++ 2M (with the
    midpoint or Heun correction)."""
    if solver_type not in ("heun", "midpoint"):
        raise ValueError(f"solver_type must be 'heun' or 'midpoint', got {solver_type!r}")
    x, sigmas = prepare(x, sigmas)
    noise = require_noise(noise, "DPM++ 2M SDE", needed=bool(eta))
    old_denoised, h_last, h = None, None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma) - math.log(sigma_next)
            eta_h = eta * h
            # 1. first-order exponential step with noise decay exp(-eta h)
            x = (sigma_next / sigma * math.exp(-eta_h) * x
                 - math.expm1(-h - eta_h) * denoised)
            # 2. second-order correction from the previous x0
            if old_denoised is not None:
                assert h_last is not None  # set with old_denoised
                r = h_last / h
                if solver_type == "heun":
                    phi = -math.expm1(-h - eta_h) / (-h - eta_h) + 1
                else:
                    phi = 0.5 * -math.expm1(-h - eta_h)
                x = x + phi * (1 / r) * (denoised - old_denoised)
            # 3. fresh noise
            if eta:
                x = x + (noise(sigma, sigma_next) * sigma_next
                         * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise)
        old_denoised, h_last = denoised, h
        if stop_requested(callback, i, x):
            break
    return x


def sample_dpmpp_2m_sde_heun(model: Denoise, x: np.ndarray, sigmas: np.ndarray, *,
                             noise: NoiseSampler | None = None, callback: Callback | None = None,
                             eta: float = 1.0, s_noise: float = 1.0) -> np.ndarray:
    """DPM++ 2M SDE with the Heun correction (the WebUI's "DPM++ 2M SDE Heun")."""
    return sample_dpmpp_2m_sde(model, x, sigmas, noise=noise, callback=callback, eta=eta,
                               s_noise=s_noise, solver_type="heun")
