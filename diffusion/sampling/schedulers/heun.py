"""Heun's method (Karras et al. 2022, Algorithm 1 without churn): HeunDiscreteScheduler."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..model_sampling import BETA_DEFAULTS
from ._base import as_float64, result
from ._sigmas import SigmaScheduler

__all__ = ["HeunDiscreteScheduler"]


class HeunDiscreteScheduler(SigmaScheduler):
    """Second-order ODE solver: every step but the last costs two model calls, so `timesteps`
    lists each inner timestep twice. Deterministic. WebUI name: "Heun"."""

    order = 2
    defaults: ClassVar[dict[str, Any]] = {
        **BETA_DEFAULTS,
        "prediction_type": "epsilon",
        "use_karras_sigmas": False,
        "clip_sample": False,
        "clip_sample_range": 1.0,
        "timestep_spacing": "linspace",
        "steps_offset": 0,
    }

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose `num_inference_steps` steps; `timesteps` gets 2 * n - 1 entries."""
        timesteps, sigmas = self._schedule(num_inference_steps)
        self.sigmas = np.concatenate([sigmas[:1], sigmas[1:-1].repeat(2), sigmas[-1:]])
        self._reset(np.concatenate([timesteps[:1], timesteps[1:].repeat(2)]),
                    num_inference_steps)
        self._derivative: np.ndarray | None = None
        self._dt = 0.0
        self._sample: np.ndarray | None = None

    def step(self, model_output: Any, timestep: float, sample: Any, *,
             noise: Any = None, generator: np.random.Generator | None = None) -> np.ndarray:
        """One half of a Heun step (the Euler predictor or the trapezoidal corrector).

        `noise`/`generator` are accepted for a uniform interface and unused.
        diffusers: `scheduler.step(model_output, t, sample).prev_sample`.
        """
        i = self._current_index(timestep)
        x, out = as_float64(sample), as_float64(model_output)
        first = self._derivative is None
        sigma, sigma_next = (self.sigmas[i], self.sigmas[i + 1]) if first else \
            (self.sigmas[i - 1], self.sigmas[i])
        # 1. predicted x0 at the noise level the model just saw
        x0 = self._x0(out, x, sigma if first else sigma_next)
        if self.config["clip_sample"]:
            bound = self.config["clip_sample_range"]
            x0 = np.clip(x0, -bound, bound)
        if first:
            # 2. derivative at sigma and an Euler predictor to sigma_next
            self._derivative = (x - x0) / sigma
            self._dt = sigma_next - sigma
            self._sample = x
            prev = x + self._derivative * self._dt
        else:
            # 3. average the two slopes and redo the step from the saved sample
            derivative = (self._derivative + (x - x0) / sigma_next) / 2
            prev = self._sample + derivative * self._dt
            self._derivative = self._sample = None
        self._step_index = i + 1
        return result(prev, sample)
