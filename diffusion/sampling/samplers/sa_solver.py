"""SA-Solver (Xue et al. 2023, arXiv:2309.05019) as ComfyUI runs it (`sample_sa_solver`,
`comfy/k_diffusion/sa_solver.py`): a stochastic Adams predictor-corrector in data prediction,
lambda = -log(sigma), with stochasticity tau on a sigma interval."""

from __future__ import annotations

import math

import numpy as np

from ._common import Callback, Denoise, NoiseSampler, Sigmas, prepare, require_noise, stop_requested
from .registry import register

__all__ = ["sample_sa_solver", "sample_sa_solver_pece", "sd_percent_to_sigma",
           "stochastic_adams_coefficients"]


def sd_percent_to_sigma(percent: float) -> float:
    """ComfyUI's ModelSamplingDiscrete.percent_to_sigma for SD 1.x/2.x/XL's scaled-linear
    schedule (1000 steps, betas 0.00085..0.012): the sigma at timestep (1 - percent) * 999."""
    if percent <= 0:
        return 999999999.9
    if percent >= 1:
        return 0.0
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    alphas_cumprod = np.cumprod(1 - betas).astype(np.float32).astype(np.float64)
    log_sigmas = np.log(((1 - alphas_cumprod) / alphas_cumprod) ** 0.5)
    t = (1 - percent) * 999.0
    low = math.floor(t)
    w = t - low
    return float(math.exp((1 - w) * log_sigmas[low] + w * log_sigmas[min(low + 1, 999)]))


def _exponential_coefficients(s: float, t: float, order: int, tau: float) -> np.ndarray:
    """(1 + tau^2) * integral_s^t exp((1 + tau^2) x) x^p dx / exp((1 + tau^2) t), p < order,
    by repeated integration by parts."""
    tau_mul = 1 + tau**2
    p = np.arange(order)
    products = t**p - s**p * math.exp(-tau_mul * (t - s))
    depth = p[:, None] - p[None, :]
    log_factorial = np.array([math.lgamma(k + 1) for k in p])
    log_coeff = log_factorial[:, None] - log_factorial[None, :] - depth * math.log(tau_mul)
    coeff = np.tril(np.exp(log_coeff) * np.where(depth % 2 == 0, 1.0, -1.0))
    return coeff @ products


def stochastic_adams_coefficients(sigma_next: float, lambdas: np.ndarray, lambda_s: float,
                                  lambda_t: float, tau: float, simple_order_2: bool = False,
                                  corrector: bool = False) -> np.ndarray:
    """b_i of SA-Solver eqs. 15/18: exponentially weighted integrals of the Lagrange basis through
    `lambdas` over [lambda_s, lambda_t], times alpha_t (= 1 for these models)."""
    tau_mul = 1 + tau**2
    h = lambda_t - lambda_s
    alpha_t = sigma_next * math.exp(lambda_t)
    if simple_order_2 and len(lambdas) == 2:
        if corrector:
            b_1 = alpha_t * (0.5 * tau_mul * h)
            b_2 = alpha_t * -math.expm1(-h * tau_mul) - b_1
        else:
            b_2 = alpha_t * (0.5 * tau_mul * h**2) / (lambdas[-2] - lambda_s)
            b_1 = alpha_t * -math.expm1(-h * tau_mul) - b_2
        return np.array([b_2, b_1])
    integrals = _exponential_coefficients(lambda_s, lambda_t, len(lambdas), tau)
    vandermonde_t = np.vander(lambdas, len(lambdas), increasing=True).T
    return alpha_t * np.linalg.solve(vandermonde_t, integrals)


def _combine(predictions: list[np.ndarray], coeffs: np.ndarray) -> np.ndarray:
    return sum(c * p for c, p in zip(coeffs, predictions))


@register("SA-Solver", "sa_solver", stochastic=True)
def sample_sa_solver(model: Denoise, x: np.ndarray, sigmas: Sigmas, *,
                     noise: NoiseSampler | None = None, callback: Callback | None = None,
                     eta: float = 1.0, tau_sigma_range: tuple[float, float] | None = None,
                     s_noise: float = 1.0, predictor_order: int = 3, corrector_order: int = 4,
                     use_pece: bool = False, simple_order_2: bool = False) -> np.ndarray:
    """Predictor (order <= predictor_order) then, from the second step, corrector (order <=
    corrector_order) on the stored predictions; tau = eta inside `tau_sigma_range` =
    (high, low) sigma, default ComfyUI's 20%..80% of SD's discrete schedule, 0 outside."""
    x, sigmas = prepare(x, sigmas)
    high, low = tau_sigma_range or (sd_percent_to_sigma(0.2), sd_percent_to_sigma(0.8))

    def tau_of(sigma: float) -> float:
        return eta if eta > 0 and high >= sigma >= low else 0.0

    stochastic = s_noise > 0 and any(tau_of(s) > 0 for s in sigmas[1:-1])
    noise = require_noise(noise, "SA-Solver", needed=stochastic)
    with np.errstate(divide="ignore"):
        lambdas = -np.log(np.asarray(sigmas))
    n = len(sigmas) - 1
    step_noise: np.ndarray | float
    x_pred, h, tau_t, step_noise = x, 0.0, 0.0, 0.0
    predictions: list[np.ndarray] = []
    lower_order_to_end = sigmas[-1] == 0
    for i in range(n):
        # 1. evaluate at the predicted state
        denoised = model(x_pred, sigmas[i])
        predictions = [*predictions, denoised][-max(predictor_order, corrector_order):]
        p_order = min(predictor_order, len(predictions))
        c_order = 0 if i == 0 or (sigmas[i + 1] == 0 and not use_pece) else min(
            corrector_order, len(predictions))
        if lower_order_to_end:
            p_order = min(p_order, n - 1 - i)
            c_order = min(c_order, n - i)
        # 2. corrector: redo the last step with the new prediction included
        if c_order == 0:
            x = x_pred
        else:
            b = stochastic_adams_coefficients(sigmas[i], lambdas[i - c_order + 1:i + 1],
                                              lambdas[i - 1], lambdas[i], tau_t, simple_order_2,
                                              corrector=True)
            x = (sigmas[i] / sigmas[i - 1] * math.exp(-(tau_t**2) * h) * x
                 + _combine(predictions[-c_order:], b))
            if tau_t > 0 and s_noise > 0:
                x = x + step_noise
            if use_pece:
                denoised = model(x, sigmas[i])
                predictions[-1] = denoised
        # 3. predictor for the next sigma
        if sigmas[i + 1] == 0:
            x_pred = denoised
        else:
            tau_t = tau_of(sigmas[i + 1])
            b = stochastic_adams_coefficients(sigmas[i + 1], lambdas[i - p_order + 1:i + 1],
                                              lambdas[i], lambdas[i + 1], tau_t, simple_order_2)
            h = lambdas[i + 1] - lambdas[i]
            x_pred = (sigmas[i + 1] / sigmas[i] * math.exp(-(tau_t**2) * h) * x
                      + _combine(predictions[-p_order:], b))
            if tau_t > 0 and s_noise > 0:
                step_noise = (noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1]
                              * math.sqrt(-math.expm1(-2 * tau_t**2 * h)) * s_noise)
                x_pred = x_pred + step_noise
        if stop_requested(callback, i, x_pred):
            break
    return x_pred


@register("SA-Solver PECE", "sa_solver_pece", stochastic=True)
def sample_sa_solver_pece(model: Denoise, x: np.ndarray, sigmas: np.ndarray, *,
                          noise: NoiseSampler | None = None, callback: Callback | None = None,
                          **options: object) -> np.ndarray:
    """SA-Solver in PECE mode: the corrected state is evaluated again (two model calls a step)."""
    return sample_sa_solver(model, x, sigmas, noise=noise, callback=callback, use_pece=True,
                            **options)  # type: ignore[arg-type]
