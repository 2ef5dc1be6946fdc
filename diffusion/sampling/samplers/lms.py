"""LMS: linear multistep in sigma (k-diffusion 0.1.1 `sample_lms`)."""

from __future__ import annotations

import numpy as np

from ._common import Callback, Denoise, NoiseSampler, Sigmas, prepare, stop_requested, to_d
from .registry import register

__all__ = ["linear_multistep_coeff", "sample_lms"]

# Gauss-Legendre with 4 nodes integrates the Lagrange basis (degree <= 3) exactly; k-diffusion
# uses scipy's adaptive quad, which is exact for these polynomials to rounding.
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(4)


def linear_multistep_coeff(order: int, t: list[float], i: int, j: int) -> float:
    """Integral over [t[i], t[i+1]] of the Lagrange basis polynomial through t[i], t[i-1], ...,
    t[i-order+1] that is 1 at t[i-j] (Adams-Bashforth weight of the j-th previous slope)."""
    if order - 1 > i:
        raise ValueError(f"order {order} is too high for step {i}")
    half = (t[i + 1] - t[i]) / 2
    taus = t[i] + half * (_NODES + 1)
    basis = np.ones_like(taus)
    for k in range(order):
        if k != j:
            basis *= (taus - t[i - k]) / (t[i - j] - t[i - k])
    return float(half * np.dot(_WEIGHTS, basis))


@register("LMS", "lms", ("k_lms",))
def sample_lms(model: Denoise, x: np.ndarray, sigmas: Sigmas, *,
               noise: NoiseSampler | None = None, callback: Callback | None = None,
               order: int = 4) -> np.ndarray:
    """Adams-Bashforth steps of up to `order` on the Karras ODE dx/dsigma = (x - D) / sigma."""
    if order < 1:
        raise ValueError(f"LMS order must be at least 1, got {order}")
    x, sigmas = prepare(x, sigmas)
    slopes: list[np.ndarray] = []
    for i in range(len(sigmas) - 1):
        # 1. slope now, 2. keep the last `order` slopes
        slopes.append(to_d(x, sigmas[i], model(x, sigmas[i])))
        del slopes[:-order]
        # 3. weights of the Lagrange interpolant, 4. the multistep update
        current = min(i + 1, order)
        coeffs = [linear_multistep_coeff(current, sigmas, i, j) for j in range(current)]
        x = x + sum(c * d for c, d in zip(coeffs, reversed(slopes)))
        if stop_requested(callback, i, x):
            break
    return x
