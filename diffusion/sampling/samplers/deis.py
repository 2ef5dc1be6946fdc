"""DEIS (Zhang & Chen 2023, arXiv:2204.13902) as ComfyUI runs it (`sample_deis`, coefficients from
zju-pi/diff-sampler): an Adams-Bashforth method whose weights integrate the VP exponential
integrator's kernel ('tab', numerically) or polynomials in sigma ('rhoab', in closed form)."""

from __future__ import annotations

import math

import numpy as np

from ._common import Callback, Denoise, NoiseSampler, prepare, stop_requested
from .registry import register

__all__ = ["deis_coefficients", "sample_deis"]


def _vp_times(sigmas: np.ndarray, epsilon_s: float = 1e-3, sigma_min: float = 0.002,
              sigma_max: float = 80.0) -> tuple[np.ndarray, float, float]:
    """EDM sigma -> VP time t of the VP-SDE that spans EDM's default range (diff-sampler's
    edm2t); returns (t, beta_0, beta_1)."""
    beta_d = 2 * (math.log(sigma_min**2 + 1) / epsilon_s
                  - math.log(sigma_max**2 + 1)) / (epsilon_s - 1)
    beta_min = math.log(sigma_max**2 + 1) - 0.5 * beta_d
    t = (np.sqrt(beta_min**2 + 2 * beta_d * np.log(sigmas**2 + 1)) - beta_min) / beta_d
    return t, beta_min, beta_d + beta_min


def _tab_coefficients(sigmas: np.ndarray, max_order: int, n: int) -> list[list[float]]:
    t_steps, beta_0, beta_1 = _vp_times(sigmas)
    coeffs: list[list[float]] = []
    for i in range(len(t_steps) - 1):
        order = min(i + 1, max_order)
        if order == 1 or sigmas[i + 1] <= 0:
            coeffs.append([])  # an Euler step (the kernel is singular at sigma = 0)
            continue
        t_cur, t_next = t_steps[i], t_steps[i + 1]
        # a left Riemann-like sum over n points with step (t_next - t_cur) / n, as diff-sampler
        taus = np.linspace(t_cur, t_next, n)
        dtau = (t_next - t_cur) / n
        alpha = np.exp(-0.5 * taus**2 * (beta_1 - beta_0) - taus * beta_0)
        d_log_alpha = -(taus * (beta_1 - beta_0) + beta_0)
        integrand = -0.5 * d_log_alpha / np.sqrt(alpha * (1 - alpha))
        previous = [t_steps[i - k] for k in range(order)]
        row = []
        for j in range(order):
            basis = np.ones_like(taus)
            for k in range(order):
                if k != j:
                    basis *= (taus - previous[k]) / (previous[j] - previous[k])
            row.append(float(np.sum(integrand * basis) * dtau))
        coeffs.append(row)
    return coeffs


def _integral_2(a: float, b: float, start: float, end: float, c: float) -> float:
    return (((end**3 - start**3) / 3 - (end**2 - start**2) * (a + b) / 2 + (end - start) * a * b)
            / ((c - a) * (c - b)))


def _integral_3(a: float, b: float, c: float, start: float, end: float, d: float) -> float:
    return (((end**4 - start**4) / 4 - (end**3 - start**3) * (a + b + c) / 3
             + (end**2 - start**2) * (a * b + a * c + b * c) / 2 - (end - start) * a * b * c)
            / ((d - a) * (d - b) * (d - c)))


def _rhoab_coefficients(sigmas: np.ndarray, max_order: int) -> list[list[float]]:
    t = sigmas.tolist()
    coeffs: list[list[float]] = []
    for i in range(len(t) - 1):
        # previous points used; diff-sampler's min(i, max_order) overruns the sampler's order
        order = min(i, max_order - 1)
        cur, nxt = t[i], t[i + 1]
        if order == 0:
            coeffs.append([])
        elif order == 1:
            p1 = t[i - 1]
            coeffs.append([((nxt - p1) ** 2 - (cur - p1) ** 2) / (2 * (cur - p1)),
                           (nxt - cur) ** 2 / (2 * (p1 - cur))])
        elif order == 2:
            p1, p2 = t[i - 1], t[i - 2]
            coeffs.append([_integral_2(p1, p2, cur, nxt, cur), _integral_2(cur, p2, cur, nxt, p1),
                           _integral_2(cur, p1, cur, nxt, p2)])
        else:
            p1, p2, p3 = t[i - 1], t[i - 2], t[i - 3]  # order 3: max_order 4
            coeffs.append([_integral_3(p1, p2, p3, cur, nxt, cur),
                           _integral_3(cur, p2, p3, cur, nxt, p1),
                           _integral_3(cur, p1, p3, cur, nxt, p2),
                           _integral_3(cur, p1, p2, cur, nxt, p3)])
    return coeffs


def deis_coefficients(sigmas: np.ndarray, max_order: int, mode: str = "tab",
                      n: int = 10000) -> list[list[float]]:
    """Per step, the weights of the current and previous slopes (empty: an Euler step)."""
    if mode == "tab":
        return _tab_coefficients(np.asarray(sigmas, dtype=np.float64), max_order, n)
    if mode == "rhoab":
        return _rhoab_coefficients(np.asarray(sigmas, dtype=np.float64), max_order)
    raise ValueError(f"deis_mode must be 'tab' or 'rhoab', got {mode!r}")


@register("DEIS", "deis")
def sample_deis(model: Denoise, x: np.ndarray, sigmas: np.ndarray, *,
                noise: NoiseSampler | None = None, callback: Callback | None = None,
                max_order: int = 3, deis_mode: str = "tab") -> np.ndarray:
    """DEIS multistep: x += sum_j c_ij d_{i-j}; Euler on the first step and into sigma = 0."""
    if not 1 <= max_order <= 4:
        raise ValueError(f"DEIS max_order must be 1 to 4, got {max_order}")
    x, sigma_list = prepare(x, sigmas)
    coeffs = deis_coefficients(np.asarray(sigma_list), max_order, deis_mode)
    slopes: list[np.ndarray] = []  # newest first
    for i in range(len(sigma_list) - 1):
        sigma, sigma_next = sigma_list[i], sigma_list[i + 1]
        d = (x - model(x, sigma)) / sigma
        order = 1 if sigma_next <= 0 else min(max_order, i + 1)
        if order == 1:
            x = x + (sigma_next - sigma) * d
        else:
            x = x + sum(c * s for c, s in zip(coeffs[i], [d, *slopes]))
        slopes = [d, *slopes][: max(max_order - 1, 1)]
        if stop_requested(callback, i, x):
            break
    return x
