"""DDPM ancestral sampling (Ho et al. 2020, Algorithm 2): diffusers' DDPMScheduler."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..model_sampling import BETA_DEFAULTS
from ._base import Scheduler, as_float64, result, spaced_timesteps

__all__ = ["DDPMScheduler"]


class DDPMScheduler(Scheduler):
    """Samples the posterior q(x_{t-1} | x_t, x0) with the predicted x0; stochastic.
    Made for ~1000 steps; WebUI name: "DDPM"."""

    defaults: ClassVar[dict[str, Any]] = {
        **BETA_DEFAULTS,
        "variance_type": "fixed_small",
        "clip_sample": True,
        "clip_sample_range": 1.0,
        "prediction_type": "epsilon",
        "timestep_spacing": "leading",
        "steps_offset": 0,
        "rescale_betas_zero_snr": False,
    }
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {
        "variance_type": ("fixed_small", "fixed_small_log", "fixed_large"),
    }

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose `num_inference_steps` integer timesteps (descending) for sampling."""
        self._check_steps(num_inference_steps)
        self._reset(spaced_timesteps(self.config, num_inference_steps,
                                     round_linspace=True).astype(np.int64))

    def step(self, model_output: Any, timestep: int, sample: Any, *,
             noise: Any = None, generator: np.random.Generator | None = None) -> np.ndarray:
        """One posterior-sampling step; returns x_{t-1}.

        `noise`: the standard-normal draw (unused at t = 0), else from `generator`.
        diffusers: `scheduler.step(model_output, t, sample, generator=g).prev_sample`.
        """
        i = self._current_index(timestep)
        x, out = as_float64(sample), as_float64(model_output)
        t = int(timestep)
        alpha_prod = self.alphas_cumprod[t]
        alpha_prev = self.alphas_cumprod[self.timesteps[i + 1]] if i + 1 < len(self.timesteps) \
            else 1.0
        alpha = alpha_prod / alpha_prev
        beta = 1 - alpha
        # 1. predicted x0
        x0, _ = self._x0_from_alpha(out, x, alpha_prod)
        if self.config["clip_sample"]:
            bound = self.config["clip_sample_range"]
            x0 = np.clip(x0, -bound, bound)
        self.pred_original_sample = result(x0, sample)
        # 2. posterior mean mu_t(x_t, x0), eq. 7 of the paper
        prev = (alpha_prev**0.5 * beta * x0 + alpha**0.5 * (1 - alpha_prev) * x) / (1 - alpha_prod)
        # 3. add posterior noise
        if t > 0:
            variance = max((1 - alpha_prev) / (1 - alpha_prod) * beta, 1e-20)
            std = {"fixed_small": variance**0.5, "fixed_small_log": variance**0.5,
                   "fixed_large": beta**0.5}[self.config["variance_type"]]
            prev = prev + std * self._noise(x.shape, noise, generator)
        self._step_index = i + 1
        return result(prev, sample)
