"""Sigma-space schedulers (k-diffusion's parametrization): x_t = x_0 + sigma_t * eps.

Euler, Euler ancestral, Heun and LMS step in sigma = sqrt((1 - abar) / abar) rather than in
abar; the UNet still sees the variance-preserving input x_t / sqrt(sigma^2 + 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model_sampling import discrete_sigma_to_t
from ._base import Scheduler, _batch_shape, spaced_timesteps

__all__ = ["SigmaScheduler", "karras_sigmas"]


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. 2022, eq. 5: `n` sigmas from sigma_max down to sigma_min, spaced in
    sigma^(1/rho) so more steps land at low noise."""
    ramp = np.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


class SigmaScheduler(Scheduler):
    """Base of the sigma-space schedulers: `sigmas` (len(timesteps) + 1, ending in 0)."""

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        if self.config.get("rescale_betas_zero_snr"):
            # zero terminal SNR makes the last sigma infinite; diffusers pins abar to 2^-24
            self.alphas_cumprod[-1] = 2.0**-24
        self.train_sigmas = np.sqrt((1 - self.alphas_cumprod) / self.alphas_cumprod)
        self.sigmas = np.append(self.train_sigmas[::-1], 0.0)
        self.timesteps = np.arange(len(self.train_sigmas), dtype=np.float64)[::-1].copy()

    @property
    def init_noise_sigma(self) -> float:  # type: ignore[override]
        """Standard deviation of the initial latent noise (the largest sigma)."""
        top = float(self.sigmas.max())
        if self.config["timestep_spacing"] in ("linspace", "trailing"):
            return top
        return (top**2 + 1) ** 0.5

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose `num_inference_steps` timesteps (and their sigmas) for sampling."""
        self.timesteps, self.sigmas = self._schedule(num_inference_steps)
        self._reset(self.timesteps)

    def _schedule(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(timesteps, sigmas) for `n` steps; sigmas has a trailing 0."""
        timesteps = spaced_timesteps(self.config, n, round_linspace=False)
        sigmas = np.interp(timesteps, np.arange(len(self.train_sigmas)), self.train_sigmas)
        if self.config.get("use_karras_sigmas"):
            lo = self.config.get("sigma_min") or sigmas[-1]
            hi = self.config.get("sigma_max") or sigmas[0]
            sigmas = karras_sigmas(lo, hi, n)
            timesteps = discrete_sigma_to_t(sigmas, np.log(self.train_sigmas))
        return timesteps, np.append(sigmas, 0.0)

    def scale_model_input(self, sample: np.ndarray, timestep: float) -> np.ndarray:
        """sample / sqrt(sigma^2 + 1): the variance-preserving x_t the UNet was trained on.

        diffusers: `scheduler.scale_model_input(sample, t)`.
        """
        sigma = self.sigmas[self._current_index(timestep)]
        return sample / np.sqrt(sigma**2 + 1)

    def add_noise(self, original: np.ndarray, noise: np.ndarray, timesteps: Any) -> np.ndarray:
        """x_0 + sigma_t * noise at the sigma of each of `timesteps` (scheduler timesteps).

        diffusers: `scheduler.add_noise(original, noise, timesteps)`.
        """
        t = np.asarray(timesteps, dtype=np.float64).reshape(-1)
        sigma = self.sigmas[self._noise_indices(t)].reshape(_batch_shape(t, original))
        return original + noise * sigma

    def _x0(self, model_output: np.ndarray, sample: np.ndarray, sigma: float) -> np.ndarray:
        """1. predicted x0 from an epsilon or v prediction at noise level `sigma`."""
        if self.config["prediction_type"] == "v_prediction":
            return model_output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)
        return sample - sigma * model_output
