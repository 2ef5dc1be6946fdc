"""Res Multistep (ComfyUI `res_multistep`): the second-order multistep exponential integrator of
Zhang et al. (arXiv:2308.02157, "RES") in data prediction, t = -log(sigma); optional ancestral
noise (eta) and CFG++ (the renoising direction from the unconditional prediction)."""

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
    uncond_of,
)
from .registry import register

__all__ = ["sample_res_multistep", "sample_res_multistep_ancestral",
           "sample_res_multistep_ancestral_cfg_pp", "sample_res_multistep_cfg_pp"]


def _phi_1(z: float) -> float:
    return math.expm1(z) / z


def _phi_2(z: float) -> float:
    return (_phi_1(z) - 1.0) / z


def _res_multistep(model: Denoise, x: np.ndarray, sigmas: Sigmas, noise: NoiseSampler | None,
                   callback: Callback | None, eta: float, s_noise: float,
                   cfg_pp: bool) -> np.ndarray:
    x, sigmas = prepare(x, sigmas)
    noise = require_noise(noise, "Res Multistep ancestral", needed=eta > 0 and s_noise > 0)
    old_denoised, old_sigma_down = None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        uncond = uncond_of(model) if cfg_pp else denoised
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        if sigma_down == 0 or old_denoised is None:
            # 1. Euler (first step, and into sigma = 0)
            if cfg_pp:
                x = denoised + to_d(x, sigma, uncond) * sigma_down
            else:
                x = x + to_d(x, sigma, denoised) * (sigma_down - sigma)
        else:
            # 2. RES second order with the previous prediction at c2 (negative: it lies behind)
            t, t_next = -math.log(sigma), -math.log(sigma_down)
            assert old_sigma_down is not None  # set with old_denoised
            t_old, t_prev = -math.log(old_sigma_down), -math.log(sigmas[i - 1])
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi_1, phi_2 = _phi_1(-h), _phi_2(-h)
            b1 = phi_1 - phi_2 / c2 if c2 else 0.0
            b2 = phi_2 / c2 if c2 else 0.0
            if cfg_pp:
                x = x + (denoised - uncond)
            x = math.exp(-h) * x + h * (b1 * uncond + b2 * old_denoised)
        # 3. ancestral noise
        if sigma_next > 0 and eta > 0 and s_noise > 0:
            x = x + noise(sigma, sigma_next) * s_noise * sigma_up
        old_denoised, old_sigma_down = uncond, sigma_down
        if stop_requested(callback, i, x):
            break
    return x


@register("Res Multistep", "res_multistep")
def sample_res_multistep(model: Denoise, x: np.ndarray, sigmas: np.ndarray, *,
                         noise: NoiseSampler | None = None, callback: Callback | None = None,
                         s_noise: float = 1.0) -> np.ndarray:
    """Deterministic RES multistep (ComfyUI `res_multistep`)."""
    return _res_multistep(model, x, sigmas, noise, callback, 0.0, s_noise, cfg_pp=False)


@register("Res Multistep CFG++", "res_multistep_cfg_pp", needs_uncond=True)
def sample_res_multistep_cfg_pp(model: Denoise, x: np.ndarray, sigmas: np.ndarray, *,
                                noise: NoiseSampler | None = None,
                                callback: Callback | None = None,
                                s_noise: float = 1.0) -> np.ndarray:
    """RES multistep with CFG++ (needs `model.uncond`)."""
    return _res_multistep(model, x, sigmas, noise, callback, 0.0, s_noise, cfg_pp=True)


@register("Res Multistep a", "res_multistep_ancestral", stochastic=True, uses_ensd=True)
def sample_res_multistep_ancestral(model: Denoise, x: np.ndarray, sigmas: np.ndarray, *,
                                   noise: NoiseSampler | None = None,
                                   callback: Callback | None = None, eta: float = 1.0,
                                   s_noise: float = 1.0) -> np.ndarray:
    """RES multistep with ancestral noise."""
    return _res_multistep(model, x, sigmas, noise, callback, eta, s_noise, cfg_pp=False)


@register("Res Multistep a CFG++", "res_multistep_ancestral_cfg_pp", stochastic=True,
          uses_ensd=True, needs_uncond=True)
def sample_res_multistep_ancestral_cfg_pp(model: Denoise, x: np.ndarray, sigmas: np.ndarray, *,
                                          noise: NoiseSampler | None = None,
                                          callback: Callback | None = None, eta: float = 1.0,
                                          s_noise: float = 1.0) -> np.ndarray:
    """RES multistep with ancestral noise and CFG++ (needs `model.uncond`)."""
    return _res_multistep(model, x, sigmas, noise, callback, eta, s_noise, cfg_pp=True)
