"""Euler ancestral (k-diffusion's sample_euler_ancestral, eta = 1):
diffusers' EulerAncestralDiscreteScheduler."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..model_sampling import BETA_DEFAULTS
from ._base import as_float64, result
from ._sigmas import SigmaScheduler

__all__ = ["EulerAncestralDiscreteScheduler"]


class EulerAncestralDiscreteScheduler(SigmaScheduler):
    """Euler step down to sigma_down, then fresh noise of sigma_up; stochastic. WebUI: "Euler a"."""

    defaults: ClassVar[dict[str, Any]] = {
        **BETA_DEFAULTS,
        "prediction_type": "epsilon",
        "timestep_spacing": "linspace",
        "steps_offset": 0,
        "rescale_betas_zero_snr": False,
    }

    def step(self, model_output: Any, timestep: float, sample: Any, *,
             noise: Any = None, generator: np.random.Generator | None = None) -> np.ndarray:
        """One ancestral step from `timestep` to the next; returns the less noisy sample.

        `noise`: the standard-normal draw to add (same shape as `sample`); else it comes from
        `generator` (a numpy Generator; a fresh one when None).
        diffusers: `scheduler.step(model_output, t, sample, generator=g).prev_sample`.
        """
        i = self._current_index(timestep)
        x, out = as_float64(sample), as_float64(model_output)
        sigma, sigma_to = self.sigmas[i], self.sigmas[i + 1]
        # 1. predicted x0
        x0 = self._x0(out, x, sigma)
        self.pred_original_sample = result(x0, sample)
        # 2. split the target noise level into a deterministic part and fresh noise
        sigma_up = (sigma_to**2 * (sigma**2 - sigma_to**2) / sigma**2) ** 0.5
        sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
        # 3. Euler step to sigma_down
        prev = x + (x - x0) / sigma * (sigma_down - sigma)
        # 4. add noise of standard deviation sigma_up
        prev = prev + self._noise(x.shape, noise, generator) * sigma_up
        self._step_index = i + 1
        return result(prev, sample)
