"""iPNDM and iPNDM-v (Zhang & Chen 2023, DEIS paper; ComfyUI `sample_ipndm`, `sample_ipndm_v`,
from zju-pi/diff-sampler): Adams-Bashforth on the Karras ODE in sigma, with fixed coefficients
(iPNDM) or coefficients for variable step sizes (iPNDM-v)."""

from __future__ import annotations

import numpy as np

from ._common import Callback, Denoise, NoiseSampler, Sigmas, prepare, stop_requested
from .registry import register

__all__ = ["sample_ipndm", "sample_ipndm_v"]

# Adams-Bashforth weights for equal steps, newest slope first
_AB_WEIGHTS = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12),
               4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def _variable_weights(sigmas: list[float], i: int, order: int) -> tuple[float, ...]:
    """Adams-Bashforth weights for unequal steps (diff-sampler's iPNDM-v formulas)."""
    h_n = sigmas[i + 1] - sigmas[i]
    if order == 1:
        return (1.0,)
    h_n_1 = sigmas[i] - sigmas[i - 1]
    if order == 2:
        return ((2 + h_n / h_n_1) / 2, -(h_n / h_n_1) / 2)
    h_n_2 = sigmas[i - 1] - sigmas[i - 2]
    temp1 = (1 - h_n / (3 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1))
             / (h_n_1 * (h_n_1 + h_n_2))) / 2
    if order == 3:
        return ((2 + h_n / h_n_1) / 2 + temp1,
                -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp1,
                temp1 * h_n_1 / h_n_2)
    h_n_3 = sigmas[i - 2] - sigmas[i - 3]
    ratio = h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3))
    temp2 = (((1 - h_n / (3 * (h_n + h_n_1))) / 2
              + (1 - h_n / (2 * (h_n + h_n_1))) * h_n / (6 * (h_n + h_n_1 + h_n_2)))
             * (h_n * (h_n + h_n_1) * (h_n + h_n_1 + h_n_2))
             / (h_n_1 * (h_n_1 + h_n_2) * (h_n_1 + h_n_2 + h_n_3)))
    return ((2 + h_n / h_n_1) / 2 + temp1 + temp2,
            -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp1 - (1 + h_n_1 / h_n_2 + ratio) * temp2,
            temp1 * h_n_1 / h_n_2 + (h_n_1 / h_n_2 + ratio * (1 + h_n_2 / h_n_3)) * temp2,
            -temp2 * ratio * h_n_1 / h_n_2)


def _sample(model: Denoise, x: np.ndarray, sigmas: Sigmas, callback: Callback | None,
            max_order: int, variable: bool) -> np.ndarray:
    if not 1 <= max_order <= 4:
        raise ValueError(f"iPNDM max_order must be 1 to 4, got {max_order}")
    x, sigmas = prepare(x, sigmas)
    slopes: list[np.ndarray] = []  # newest first
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        d = (x - denoised) / sigma
        order = min(max_order, i + 1)
        if sigma_next == 0:
            x = denoised
        else:
            weights = _variable_weights(sigmas, i, order) if variable else _AB_WEIGHTS[order]
            slope = sum(w * s for w, s in zip(weights, [d, *slopes]))
            x = x + (sigma_next - sigma) * slope
        slopes = [d, *slopes][: max(max_order - 1, 1)]
        if stop_requested(callback, i, x):
            break
    return x


@register("iPNDM", "ipndm")
def sample_ipndm(model: Denoise, x: np.ndarray, sigmas: np.ndarray, *,
                 noise: NoiseSampler | None = None, callback: Callback | None = None,
                 max_order: int = 4) -> np.ndarray:
    """iPNDM: Adams-Bashforth with the equal-step weights, warming up from order 1."""
    return _sample(model, x, sigmas, callback, max_order, variable=False)


@register("iPNDM-v", "ipndm_v", ("iPNDM v",))
def sample_ipndm_v(model: Denoise, x: np.ndarray, sigmas: np.ndarray, *,
                   noise: NoiseSampler | None = None, callback: Callback | None = None,
                   max_order: int = 4) -> np.ndarray:
    """iPNDM-v: Adams-Bashforth with weights for the schedule's actual (unequal) steps."""
    return _sample(model, x, sigmas, callback, max_order, variable=True)
