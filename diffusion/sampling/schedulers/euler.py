"""Euler (Karras et al. 2022, Algorithm 2 without churn): diffusers' EulerDiscreteScheduler."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..model_sampling import BETA_DEFAULTS
from ._base import as_float64, result
from ._sigmas import SigmaScheduler

__all__ = ["EulerDiscreteScheduler"]


class EulerDiscreteScheduler(SigmaScheduler):
    """First-order ODE solver in sigma space; deterministic. WebUI name: "Euler"."""

    defaults: ClassVar[dict[str, Any]] = {
        **BETA_DEFAULTS,
        "prediction_type": "epsilon",
        "use_karras_sigmas": False,
        "sigma_min": None,
        "sigma_max": None,
        "timestep_spacing": "linspace",
        "steps_offset": 0,
        "rescale_betas_zero_snr": False,
    }

    def step(self, model_output: Any, timestep: float, sample: Any, *,
             noise: Any = None, generator: np.random.Generator | None = None) -> np.ndarray:
        """One Euler step from `timestep` to the next; returns the less noisy sample.

        `model_output`/`sample`: same shape, e.g. (B, 4, H/8, W/8). `noise`/`generator` are
        accepted for a uniform interface and unused (the step is deterministic).
        diffusers: `scheduler.step(model_output, t, sample).prev_sample`.
        """
        i = self._current_index(timestep)
        x, out = as_float64(sample), as_float64(model_output)
        sigma, sigma_next = self.sigmas[i], self.sigmas[i + 1]
        # 1. predicted x0
        x0 = self._x0(out, x, sigma)
        self.pred_original_sample = result(x0, sample)
        # 2. derivative dx/dsigma of the probability-flow ODE
        derivative = (x - x0) / sigma
        # 3. Euler step to the next sigma
        prev = x + derivative * (sigma_next - sigma)
        self._step_index = i + 1
        return result(prev, sample)
