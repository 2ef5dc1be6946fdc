"""CFG++ samplers (Chung et al. 2024, arXiv:2406.08070) as ComfyUI runs them for eps/v models:
the step's direction back to noise uses the unconditional x0 (`model.uncond`) while the guided
x0 is the target, which lets low CFG scales (~1-2) work. With cond == uncond each reduces to its
plain sampler."""

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

__all__ = ["sample_dpmpp_2m_cfg_pp", "sample_dpmpp_2s_ancestral_cfg_pp",
           "sample_euler_ancestral_cfg_pp", "sample_euler_cfg_pp"]


@register("Euler a CFG++", "euler_ancestral_cfg_pp", ("euler_a_cfg_pp", "euler_a_cfgpp"),
          needs_uncond=True, uses_ensd=True, stochastic=True)
def sample_euler_ancestral_cfg_pp(model: Denoise, x: np.ndarray, sigmas: Sigmas, *,
                                  noise: NoiseSampler | None = None,
                                  callback: Callback | None = None, eta: float = 1.0,
                                  s_noise: float = 1.0) -> np.ndarray:
    """x <- D_guided + sigma_down * (x - D_uncond) / sigma, then noise of std sigma_up."""
    x, sigmas = prepare(x, sigmas)
    noise = require_noise(noise, "Euler a CFG++", needed=eta > 0 and s_noise > 0)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if sigma_next == 0:
            x = denoised
        else:
            d = to_d(x, sigma, uncond_of(model))
            sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
            x = denoised + sigma_down * d
            if eta > 0 and s_noise > 0:
                x = x + noise(sigma, sigma_next) * s_noise * sigma_up
        if stop_requested(callback, i, x):
            break
    return x


@register("Euler CFG++", "euler_cfg_pp", ("euler_cfgpp",), needs_uncond=True)
def sample_euler_cfg_pp(model: Denoise, x: np.ndarray, sigmas: np.ndarray, *,
                        noise: NoiseSampler | None = None,
                        callback: Callback | None = None) -> np.ndarray:
    """Euler CFG++: x <- D_guided + sigma_next * (x - D_uncond) / sigma."""
    return sample_euler_ancestral_cfg_pp(model, x, sigmas, noise=noise, callback=callback,
                                         eta=0.0, s_noise=0.0)


@register("DPM++ 2M CFG++", "dpmpp_2m_cfg_pp", needs_uncond=True, default_schedule="Karras")
def sample_dpmpp_2m_cfg_pp(model: Denoise, x: np.ndarray, sigmas: Sigmas, *,
                           noise: NoiseSampler | None = None,
                           callback: Callback | None = None) -> np.ndarray:
    """DPM-Solver++(2M) with the exp(-h) x term renoised from the unconditional x0."""
    x, sigmas = prepare(x, sigmas)
    old_uncond = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        uncond = uncond_of(model)
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma) - math.log(sigma_next)
            mix = -math.exp(-h) * uncond
            if old_uncond is not None:
                r = (math.log(sigmas[i - 1]) - math.log(sigma)) / h
                mix = mix - math.expm1(-h) * (1 / (2 * r)) * (denoised - old_uncond)
            x = denoised + mix + math.exp(-h) * x
        old_uncond = uncond
        if stop_requested(callback, i, x):
            break
    return x


@register("DPM++ 2S a CFG++", "dpmpp_2s_ancestral_cfg_pp", needs_uncond=True,
          default_schedule="Karras", uses_ensd=True, second_order=True, stochastic=True)
def sample_dpmpp_2s_ancestral_cfg_pp(model: Denoise, x: np.ndarray, sigmas: Sigmas, *,
                                     noise: NoiseSampler | None = None,
                                     callback: Callback | None = None, eta: float = 1.0,
                                     s_noise: float = 1.0) -> np.ndarray:
    """DPM-Solver++(2S) ancestral on the unconditional x0, plus the first call's guidance
    D_guided - D_uncond added after the step (ComfyUI's formulation)."""
    x, sigmas = prepare(x, sigmas)
    noise = require_noise(noise, "DPM++ 2S a CFG++", needed=eta > 0)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        uncond = uncond_of(model)
        guidance = denoised - uncond
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        if sigma_down == 0:
            x = x + to_d(x, sigma, uncond) * (sigma_down - sigma)
        else:
            t, t_next = -math.log(sigma), -math.log(sigma_down)
            h = t_next - t
            s = t + h / 2
            x_2 = (math.exp(-s) / math.exp(-t)) * x - math.expm1(-h / 2) * uncond
            model(x_2, math.exp(-s))
            uncond_2 = uncond_of(model)
            x = (math.exp(-t_next) / math.exp(-t)) * x - math.expm1(-h) * uncond_2
        if sigma_next > 0 and eta > 0:
            x = x + noise(sigma, sigma_next) * s_noise * sigma_up
        x = x + guidance
        if stop_requested(callback, i, x):
            break
    return x
