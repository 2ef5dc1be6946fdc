"""DPM fast and DPM adaptive: DPM-Solver-1/2/3 in eps form with t = -log(sigma)
(Lu et al. 2022, arXiv:2206.00927; k-diffusion 0.1.1 `DPMSolver`, `sample_dpm_fast`,
`sample_dpm_adaptive`).

These two ignore the schedule's inner values: they step uniformly in t between sigma_max and
sigma_min. By default those are sigmas[0] and the smallest positive sigma, with
n = len(sigmas) - 1 model evaluations; the WebUI passes the model's own sigma range instead
(registry: model_sigma_range), which `sigma_min=`/`sigma_max=` accept.

Where the WebUI differs: k-diffusion builds t, the step grid and atol/rtol as torch tensors of
the default dtype, float32, so its step coefficients carry float32 rounding (measured: final
latents differ from float64 by ~3e-7 relative for DPM fast, ~1e-5 for DPM adaptive, whose step
sizes feed back). Here everything is float64 except atol/rtol, which are rounded to float32 as
k-diffusion holds them.
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
    prepare,
    require_noise,
    stop_requested,
)
from .registry import register

__all__ = ["sample_dpm_adaptive", "sample_dpm_fast"]


class _Solver:
    """DPM-Solver steps sharing the eps evaluations of one step (k-diffusion's eps_cache)."""

    def __init__(self, model: Denoise):
        self.model = model

    def eps(self, x: np.ndarray, t: float) -> np.ndarray:
        sigma = math.exp(-t)
        return (x - self.model(x, sigma)) / sigma

    @staticmethod
    def step_1(x: np.ndarray, t: float, t_next: float, eps: np.ndarray) -> np.ndarray:
        return x - math.exp(-t_next) * math.expm1(t_next - t) * eps

    def step_2(self, x: np.ndarray, t: float, t_next: float, eps: np.ndarray,
               r1: float = 1 / 2) -> tuple[np.ndarray, np.ndarray]:
        """Second-order step; also returns the midpoint eps (cached for the order-3 step)."""
        h = t_next - t
        s1 = t + r1 * h
        u1 = x - math.exp(-s1) * math.expm1(r1 * h) * eps
        eps_r1 = self.eps(u1, s1)
        sigma_next = math.exp(-t_next)
        x_2 = (x - sigma_next * math.expm1(h) * eps
               - sigma_next / (2 * r1) * math.expm1(h) * (eps_r1 - eps))
        return x_2, eps_r1

    def step_3(self, x: np.ndarray, t: float, t_next: float, eps: np.ndarray,
               eps_r1: np.ndarray | None = None, r1: float = 1 / 3,
               r2: float = 2 / 3) -> np.ndarray:
        h = t_next - t
        s1, s2 = t + r1 * h, t + r2 * h
        if eps_r1 is None:
            u1 = x - math.exp(-s1) * math.expm1(r1 * h) * eps
            eps_r1 = self.eps(u1, s1)
        u2 = (x - math.exp(-s2) * math.expm1(r2 * h) * eps
              - math.exp(-s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1) * (eps_r1 - eps))
        eps_r2 = self.eps(u2, s2)
        sigma_next = math.exp(-t_next)
        return (x - sigma_next * math.expm1(h) * eps
                - sigma_next / r2 * (math.expm1(h) / h - 1) * (eps_r2 - eps))


def _range(sigmas: list[float], sigma_min: float | None,
           sigma_max: float | None) -> tuple[float, float]:
    positive = [s for s in sigmas if s > 0]
    low = min(positive) if sigma_min is None else sigma_min
    high = max(sigmas) if sigma_max is None else sigma_max
    if low <= 0 or high <= 0:
        raise ValueError("DPM fast/adaptive need sigma_min and sigma_max above 0")
    return low, high


def _ancestral_target(t: float, t_next: float, t_end: float,
                      eta: float) -> tuple[float, float]:
    """(t to step to, noise std to add) for eta > 0, clipped at t_end as k-diffusion does."""
    if not eta:
        return t_next, 0.0
    sigma_down, _ = ancestral_step(math.exp(-t), math.exp(-t_next), eta)
    target = min(t_end, -math.log(sigma_down))
    return target, (math.exp(-t_next) ** 2 - math.exp(-target) ** 2) ** 0.5


@register("DPM fast", "dpm_fast", ("k_dpm_fast",), uses_ensd=True, stochastic=True,
          model_sigma_range=True, options={"eta": 1.0}, extra_params=("s_noise",))
def sample_dpm_fast(model: Denoise, x: np.ndarray, sigmas: Sigmas, *,
                    noise: NoiseSampler | None = None, callback: Callback | None = None,
                    eta: float = 0.0, s_noise: float = 1.0, sigma_min: float | None = None,
                    sigma_max: float | None = None, n: int | None = None) -> np.ndarray:
    """DPM-Solver-Fast: n model evaluations as third-order steps (ending 3,2,1 or 3,..,n%3)
    uniform in t."""
    x, sigmas = prepare(x, sigmas)
    low, high = _range(sigmas, sigma_min, sigma_max)
    nfe = len(sigmas) - 1 if n is None else n
    if nfe < 1:
        raise ValueError(f"DPM fast needs n >= 1 model evaluations, got {nfe}")
    noise = require_noise(noise, "DPM fast with eta > 0", needed=eta > 0)
    solver = _Solver(model)
    t_start, t_end = -math.log(high), -math.log(low)
    m = nfe // 3 + 1
    ts = np.linspace(t_start, t_end, m + 1)
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    for i, order in enumerate(orders):
        t, t_next = float(ts[i]), float(ts[i + 1])
        target, sigma_up = _ancestral_target(t, t_next, t_end, eta)
        eps = solver.eps(x, t)
        if order == 1:
            x = solver.step_1(x, t, target, eps)
        elif order == 2:
            x, _ = solver.step_2(x, t, target, eps)
        else:
            x = solver.step_3(x, t, target, eps)
        if eta > 0:
            x = x + sigma_up * s_noise * noise(math.exp(-t), math.exp(-t_next))
        if stop_requested(callback, i, x):
            break
    return x


class _PID:
    """k-diffusion's PID step-size controller (integral-only by default)."""

    def __init__(self, h: float, pcoeff: float, icoeff: float, dcoeff: float, order: float,
                 accept_safety: float, eps: float = 1e-8):
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = eps
        self.errs: list[float] = []

    def propose_step(self, error: float) -> bool:
        inv_error = 1 / (error + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2], self.errs[1] = self.errs[1], self.errs[0]
        self.h *= factor
        return accept


@register("DPM adaptive", "dpm_adaptive", ("k_dpm_ad",), uses_ensd=True, stochastic=True,
          model_sigma_range=True, options={"eta": 1.0})
def sample_dpm_adaptive(model: Denoise, x: np.ndarray, sigmas: Sigmas, *,
                        noise: NoiseSampler | None = None, callback: Callback | None = None,
                        order: int = 3, rtol: float = 0.05, atol: float = 0.0078,
                        h_init: float = 0.05, pcoeff: float = 0.0, icoeff: float = 1.0,
                        dcoeff: float = 0.0, accept_safety: float = 0.81, eta: float = 0.0,
                        s_noise: float = 1.0, sigma_min: float | None = None,
                        sigma_max: float | None = None) -> np.ndarray:
    """DPM-Solver-12 / -23 with adaptive steps: the (order-1, order) pair's difference is the
    error estimate; the number of model calls depends on the model. callback(i, x) runs after
    every attempt, accepted or not, as k-diffusion's does."""
    if order not in (2, 3):
        raise ValueError(f"DPM adaptive order must be 2 or 3, got {order}")
    x, sigmas = prepare(x, sigmas)
    low, high = _range(sigmas, sigma_min, sigma_max)
    noise = require_noise(noise, "DPM adaptive with eta > 0", needed=eta > 0)
    solver = _Solver(model)
    t_end = -math.log(low)
    s = -math.log(high)
    # k-diffusion holds atol and rtol as float32 tensors
    atol, rtol = float(np.float32(atol)), float(np.float32(rtol))
    pid = _PID(abs(h_init), pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    x_prev = x
    attempt = 0
    while s < t_end - 1e-5:
        t = min(t_end, s + pid.h)
        target, sigma_up = _ancestral_target(s, t, t_end, eta)
        eps = solver.eps(x, s)
        if order == 2:
            x_low = solver.step_1(x, s, target, eps)
            x_high, _ = solver.step_2(x, s, target, eps)
        else:
            x_low, eps_r1 = solver.step_2(x, s, target, eps, r1=1 / 3)
            x_high = solver.step_3(x, s, target, eps, eps_r1)
        delta = np.maximum(atol, rtol * np.maximum(np.abs(x_low), np.abs(x_prev)))
        error = float(np.linalg.norm((x_low - x_high) / delta) / x.size**0.5)
        if pid.propose_step(error):
            x_prev = x_low
            x = x_high
            if eta > 0:
                x = x + sigma_up * s_noise * noise(math.exp(-s), math.exp(-t))
            s = t
        if stop_requested(callback, attempt, x):
            break
        attempt += 1
    return x
