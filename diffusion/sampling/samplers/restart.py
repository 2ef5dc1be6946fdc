"""Restart (Xu et al. 2023, arXiv:2306.14878) as the WebUI runs it (`modules/sd_samplers_extra.py`
`restart_sampler`): Heun steps along a Karras schedule, and for 20 steps or more, jumps back up
from sigma ~0.1 to sigma ~2 with fresh noise and re-descends that stretch."""

from __future__ import annotations

import itertools

import numpy as np

from ._common import Callback, Denoise, NoiseSampler, Sigmas, prepare, require_noise, stop_requested
from .heun import heun_step
from .registry import register

__all__ = ["restart_plan", "sample_restart"]


def _karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> np.ndarray:
    """Karras et al. (2022) eq. 5 with the trailing 0, as k-diffusion's get_sigmas_karras
    (in float64; the WebUI's torch version ramps in float32)."""
    ramp = np.linspace(0, 1, n)
    max_inv, min_inv = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return np.append((max_inv + ramp * (min_inv - max_inv)) ** rho, 0.0)


def restart_plan(sigmas: list[float]) -> list[tuple[float, float]]:
    """The (sigma_from, sigma_to) Heun steps the WebUI's Restart takes for the given sigmas."""
    values = np.asarray(sigmas)
    steps = len(values) - 1
    restart_list: dict[float, tuple[int, int, float]] = {}
    if steps >= 20:
        # 1. fewer base steps, so that the restarts fit in the same budget
        restart_steps, restart_times = (steps // 4, 2) if steps >= 36 else (9, 1)
        values = _karras(steps - restart_steps * restart_times, float(values[-2]),
                         float(values[0]))
        restart_list = {0.1: (restart_steps + 1, restart_times, 2.0)}
    # 2. restart segments keyed by the index of the sigma nearest 0.1, reaching up to ~2
    by_index = {int(np.argmin(np.abs(values - key))): value for key, value in restart_list.items()}
    plan: list[tuple[float, float]] = []
    for i in range(len(values) - 1):
        plan.append((float(values[i]), float(values[i + 1])))
        if i + 1 in by_index:
            restart_steps, restart_times, restart_max = by_index[i + 1]
            min_idx, max_idx = i + 1, int(np.argmin(np.abs(values - restart_max)))
            if max_idx < min_idx:
                segment = _karras(restart_steps, float(values[min_idx]),
                                  float(values[max_idx]))[:-1]
                pairs = list(zip(segment[:-1].tolist(), segment[1:].tolist()))
                plan.extend(pairs * restart_times)
    return plan


@register("Restart", None, ("restart",), default_schedule="Karras", second_order=True,
          stochastic=True)
def sample_restart(model: Denoise, x: np.ndarray, sigmas: Sigmas, *,
                   noise: NoiseSampler | None = None, callback: Callback | None = None,
                   s_noise: float = 1.0) -> np.ndarray:
    """Heun steps along `restart_plan(sigmas)`; where the plan goes up, noise of std
    sqrt(sigma_up^2 - sigma^2) brings x to the higher level (noise(sigma, sigma_up) is called).
    Below 20 steps there is no restart and this is Heun."""
    x, sigmas = prepare(x, sigmas)
    plan = restart_plan(sigmas)
    goes_up = any(b[0] > a[1] for a, b in itertools.pairwise(plan))
    noise = require_noise(noise, "Restart (20 steps or more)", needed=goes_up and s_noise > 0)
    last_sigma = None
    for i, (sigma, sigma_next) in enumerate(plan):
        # 1. renoise where the plan restarts from a higher sigma
        if last_sigma is not None and last_sigma < sigma:
            x = x + noise(last_sigma, sigma) * s_noise * (sigma**2 - last_sigma**2) ** 0.5
        # 2. a Heun step (Euler into sigma = 0)
        x = heun_step(model, x, sigma, sigma_next)
        last_sigma = sigma_next
        if stop_requested(callback, i, x):
            break
    return x
