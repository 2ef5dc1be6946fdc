"""Base of the exponential-integrator multistep solvers (DPM-Solver++, UniPC).

They integrate in lambda = log(alpha_t / sigma_t) (half the log-SNR) on the variance-preserving
x_t = alpha_t x_0 + sigma_t eps, reusing the model outputs of previous steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model_sampling import discrete_sigma_to_t
from ._base import Scheduler, _batch_shape
from ._sigmas import karras_sigmas

__all__ = ["MultistepScheduler"]


class MultistepScheduler(Scheduler):
    """Shared schedule (integer timesteps, `sigmas` ending in 0), conversions and add_noise."""

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        if self.config.get("rescale_betas_zero_snr"):
            self.alphas_cumprod[-1] = 2.0**-24  # as diffusers: keeps the last lambda finite
        self.train_sigmas = np.sqrt((1 - self.alphas_cumprod) / self.alphas_cumprod)
        self.sigmas = self.train_sigmas.copy()
        self._outputs: list[np.ndarray] = []
        self._lower_order_nums = 0

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose `num_inference_steps` integer timesteps (descending) and their sigmas."""
        self._check_steps(num_inference_steps)
        total = self.config["num_train_timesteps"]
        # lambda_min_clipped (DPM-Solver, for cosine schedules) drops the noisiest timesteps
        lambdas = np.log(np.sqrt(self.alphas_cumprod)) - np.log(np.sqrt(1 - self.alphas_cumprod))
        last = total - int(np.searchsorted(lambdas[::-1],
                                           self.config.get("lambda_min_clipped", -np.inf)))
        n = num_inference_steps
        spacing = self.config["timestep_spacing"]
        # these solvers sample n + 1 points and drop t = 0, where they land without a model call
        if spacing == "linspace":
            timesteps = np.linspace(0, last - 1, n + 1).round()[::-1][:-1]
        elif spacing == "leading":
            timesteps = (np.arange(n + 1) * (last // (n + 1))).round()[::-1][:-1]
            timesteps = timesteps + self.config["steps_offset"]
        elif spacing == "trailing":
            timesteps = np.round(np.arange(last, 0, -total / n)) - 1
        else:
            raise ValueError(f"timestep_spacing {spacing!r} is not supported; use 'linspace', "
                             "'leading' or 'trailing'")
        if self.config["use_karras_sigmas"]:
            lo = self.config.get("sigma_min") or self.train_sigmas[0]
            hi = self.config.get("sigma_max") or self.train_sigmas[-1]
            sigmas = karras_sigmas(lo, hi, n)
            timesteps = discrete_sigma_to_t(sigmas, np.log(self.train_sigmas)).round()
        else:
            sigmas = np.interp(timesteps, np.arange(total), self.train_sigmas)
        self.sigmas = np.append(sigmas, 0.0)
        self._reset(timesteps.astype(np.int64))
        self._outputs = []
        self._lower_order_nums = 0

    @staticmethod
    def _alpha_sigma(sigma: Any) -> tuple[Any, Any]:
        """(alpha_t, sigma_t) of the variance-preserving process at k-diffusion sigma."""
        alpha = 1 / (sigma**2 + 1) ** 0.5
        return alpha, sigma * alpha

    def _lambda(self, index: int) -> float:
        """lambda = log(alpha_t / sigma_t) at schedule index (inf at the final sigma 0)."""
        alpha, sigma = self._alpha_sigma(self.sigmas[index])
        with np.errstate(divide="ignore"):
            return float(np.log(alpha) - np.log(sigma))

    def _x0(self, model_output: np.ndarray, sample: np.ndarray, index: int) -> np.ndarray:
        """1. the model output converted to a data (x0) prediction."""
        alpha, sigma = self._alpha_sigma(self.sigmas[index])
        if self.config["prediction_type"] == "v_prediction":
            return alpha * sample - sigma * model_output
        return (sample - sigma * model_output) / alpha

    def add_noise(self, original: np.ndarray, noise: np.ndarray, timesteps: Any) -> np.ndarray:
        """alpha_t x_0 + sigma_t noise at the sigma of each of `timesteps` (scheduler timesteps).

        diffusers: `scheduler.add_noise(original, noise, timesteps)`.
        """
        t = np.asarray(timesteps, dtype=np.float64).reshape(-1)
        alpha, sigma = self._alpha_sigma(self.sigmas[self._noise_indices(t)])
        shape = _batch_shape(t, original)
        return alpha.reshape(shape) * original + sigma.reshape(shape) * noise
