"""Linear multistep (k-diffusion's sample_lms): diffusers' LMSDiscreteScheduler."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numpy.polynomial import Polynomial

from ..model_sampling import BETA_DEFAULTS
from ._base import as_float64, result
from ._sigmas import SigmaScheduler

__all__ = ["LMSDiscreteScheduler"]


class LMSDiscreteScheduler(SigmaScheduler):
    """Adams-Bashforth in sigma: the next sample integrates a polynomial through the last
    (up to `order` = 4) derivatives. Deterministic. WebUI name: "LMS"."""

    defaults: ClassVar[dict[str, Any]] = {
        **BETA_DEFAULTS,
        "prediction_type": "epsilon",
        "use_karras_sigmas": False,
        "timestep_spacing": "linspace",
        "steps_offset": 0,
    }

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose `num_inference_steps` timesteps (and their sigmas) for sampling."""
        super().set_timesteps(num_inference_steps)
        self._derivatives: list[np.ndarray] = []

    def _coefficient(self, order: int, i: int, j: int) -> float:
        """Integral over [sigma_i, sigma_i+1] of the Lagrange basis polynomial of node i - j.

        diffusers integrates it numerically (scipy quad); a polynomial integrates exactly.
        """
        nodes = [self.sigmas[i - k] for k in range(order) if k != j]
        basis = Polynomial.fromroots(nodes) if nodes else Polynomial([1.0])
        basis = basis / np.prod([self.sigmas[i - j] - s for s in nodes])
        antiderivative = basis.integ()
        return float(antiderivative(self.sigmas[i + 1]) - antiderivative(self.sigmas[i]))

    def step(self, model_output: Any, timestep: float, sample: Any, *, order: int = 4,
             noise: Any = None, generator: np.random.Generator | None = None) -> np.ndarray:
        """One LMS step of at most `order` (fewer in the first steps).

        `noise`/`generator` are accepted for a uniform interface and unused.
        diffusers: `scheduler.step(model_output, t, sample).prev_sample`.
        """
        i = self._current_index(timestep)
        x, out = as_float64(sample), as_float64(model_output)
        sigma = self.sigmas[i]
        # 1. predicted x0
        x0 = self._x0(out, x, sigma)
        self.pred_original_sample = result(x0, sample)
        # 2. derivative, kept for the next `order` - 1 steps
        self._derivatives.append((x - x0) / sigma)
        del self._derivatives[:-order]
        # 3. linear multistep update over the stored derivatives, newest first
        order = min(i + 1, order)
        prev = x + sum(self._coefficient(order, i, j) * d
                       for j, d in enumerate(reversed(self._derivatives[-order:])))
        self._step_index = i + 1
        return result(prev, sample)
