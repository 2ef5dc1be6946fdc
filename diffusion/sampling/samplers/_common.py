"""Pieces every sampler shares: the call contract's types, input checks, and k-diffusion's helpers.

Shapes: `x` is any float array (a latent batch); sigmas are python floats taken from a 1-D
float64 array that descends to 0. Nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

__all__ = [
    "Callback",
    "Denoise",
    "NoiseSampler",
    "Sampler",
    "Sigmas",
    "Step",
    "ancestral_step",
    "churn",
    "churned_steps",
    "log_lerp_half",
    "prepare",
    "require_noise",
    "stop_requested",
    "to_d",
    "uncond_of",
]

Denoise = Callable[[np.ndarray, float], np.ndarray]
"""model(x, sigma) -> the denoised x0 prediction (classifier-free guidance already applied)."""

NoiseSampler = Callable[[float, float], "np.ndarray | float"]
"""noise(sigma, sigma_next) -> N(0, 1) noise of x's shape for the step sigma -> sigma_next
(or 0.0 where no noise is drawn: `require_noise`)."""

Sigmas = np.ndarray | Sequence[float]
"""A noise schedule: a 1-D array (or sequence) of floats descending to 0."""

Callback = Callable[[int, np.ndarray], "bool | None"]
"""callback(i, x) after step i with the new x; returning False stops sampling there."""


class Sampler(Protocol):
    """The one call shape of every sampler in this package."""

    def __call__(self, model: Denoise, x: np.ndarray, sigmas: Sigmas, *,
                 noise: NoiseSampler | None = None, callback: Callback | None = None,
                 **options: object) -> np.ndarray: ...


def prepare(x: np.ndarray, sigmas: Sigmas) -> tuple[np.ndarray, list[float]]:
    """`x` as float64 and `sigmas` as a list of floats, after checking the schedule's shape:
    1-D, at least two values, finite, non-negative and non-increasing (k-diffusion's convention:
    descending to 0, x already scaled to sigmas[0])."""
    values = np.asarray(sigmas, dtype=np.float64)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"sigmas must be a 1-D array of at least 2 noise levels ending at 0, "
                         f"got shape {values.shape}")
    if not np.all(np.isfinite(values)) or np.any(values < 0) or np.any(np.diff(values) > 0):
        raise ValueError("sigmas must be finite, non-negative and descending (k-diffusion's "
                         "convention, e.g. [14.6, ..., 0.03, 0]); reverse or clip your schedule")
    return np.asarray(x, dtype=np.float64), [float(v) for v in values]


def _no_noise(sigma: float, sigma_next: float) -> float:
    return 0.0


def require_noise(noise: NoiseSampler | None, sampler: str, *, needed: bool = True
                  ) -> NoiseSampler:
    """`noise`, or a ValueError naming `sampler` when it is None but the settings draw noise.
    When no noise is `needed` (eta = 0, s_noise = 0) a missing source becomes zeros."""
    if noise is not None:
        return noise
    if needed:
        raise ValueError(f"{sampler} draws noise: pass noise=callable(sigma, sigma_next) "
                         "returning N(0, 1) of x's shape (or set eta=0 where it has one)")
    return _no_noise


def stop_requested(callback: Callback | None, i: int, x: np.ndarray) -> bool:
    """Run the callback for step i; True when it asked to stop (returned False)."""
    return callback is not None and callback(i, x) is False


def to_d(x: np.ndarray, sigma: float, denoised: np.ndarray) -> np.ndarray:
    """The Karras ODE derivative dx/dsigma = (x - D(x, sigma)) / sigma."""
    return (x - denoised) / sigma


def ancestral_step(sigma_from: float, sigma_to: float, eta: float = 1.0) -> tuple[float, float]:
    """(sigma_down, sigma_up) of an ancestral step: move deterministically to sigma_down, then add
    noise of std sigma_up so the total reaches sigma_to (eta = 1 is the DDPM posterior)."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2)
                                    / sigma_from**2) ** 0.5)
    return (sigma_to**2 - sigma_up**2) ** 0.5, sigma_up


def churn(x: np.ndarray, sigmas: list[float], i: int, noise: NoiseSampler, *, s_churn: float,
          s_tmin: float, s_tmax: float, s_noise: float) -> tuple[np.ndarray, float]:
    """Karras et al. (2022) Algorithm 2, lines 5-6: raise step i's noise level to
    sigma_hat = sigma (1 + gamma) with fresh noise. Returns (x, sigma_hat).

    With s_churn > 0 noise is drawn on every step, even where gamma is 0 (sigma outside
    [s_tmin, s_tmax]), because k-diffusion 0.1.1 does so and the WebUI's noise stream follows it.
    """
    sigma = sigmas[i]
    if s_churn <= 0:
        return x, sigma
    eps = noise(sigma, sigmas[i + 1]) * s_noise
    gamma = min(s_churn / (len(sigmas) - 1), 2**0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
    sigma_hat = sigma * (gamma + 1)
    if gamma > 0:
        x = x + eps * (sigma_hat**2 - sigma**2) ** 0.5
    return x, sigma_hat


Step = Callable[[Denoise, np.ndarray, float, float], np.ndarray]
"""step(model, x, sigma, sigma_next) -> x carried from sigma to sigma_next."""


def churned_steps(step: Step, model: Denoise, x: np.ndarray, sigmas: Sigmas, *, sampler: str,
                  noise: NoiseSampler | None, callback: Callback | None, s_churn: float,
                  s_tmin: float, s_tmax: float, s_noise: float) -> np.ndarray:
    """Karras et al. (2022) Algorithm 2: each step's noise level raised to sigma_hat (`churn`,
    noise drawn only with s_churn > 0: `sampler` names what needs it), then `step` from
    sigma_hat to the next sigma, until the callback asks to stop. k-diffusion's Euler, Heun
    and DPM2 are this loop with their own step."""
    x, sigmas = prepare(x, sigmas)
    noise = require_noise(noise, f"{sampler} with s_churn > 0", needed=s_churn > 0)
    for i in range(len(sigmas) - 1):
        x, sigma_hat = churn(x, sigmas, i, noise, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax,
                             s_noise=s_noise)
        x = step(model, x, sigma_hat, sigmas[i + 1])
        if stop_requested(callback, i, x):
            break
    return x


def uncond_of(model: Denoise) -> np.ndarray:
    """The unconditional x0 of the model's last call (the CFG++ protocol: `model.uncond`)."""
    uncond = getattr(model, "uncond", None)
    if uncond is None:
        raise ValueError("CFG++ samplers need the unconditional prediction: the model object must "
                         "set `model.uncond` (the unconditional denoised x0) on every call")
    return uncond


def log_lerp_half(sigma_a: float, sigma_b: float) -> float:
    """exp(lerp(log a, log b, 0.5)), the geometric midpoint, rounded as torch.lerp rounds it
    (weight >= 0.5 is computed from the far end)."""
    log_a, log_b = math.log(sigma_a), math.log(sigma_b)
    return math.exp(log_b - (log_b - log_a) * 0.5)
