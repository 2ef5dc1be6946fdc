"""DPM-Solver++ multistep (Lu et al. 2022, arXiv:2211.01095): DPMSolverMultistepScheduler.

Covers the WebUI's "DPM++ 2M" (order 2), "DPM++ 2M Karras" (`use_karras_sigmas`) and
"DPM++ 2M SDE" (`algorithm_type="sde-dpmsolver++"`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from ..model_sampling import BETA_DEFAULTS
from ._base import as_float64, result
from ._multistep import MultistepScheduler

__all__ = ["DPMSolverMultistepScheduler"]


class DPMSolverMultistepScheduler(MultistepScheduler):
    """Data-prediction DPM-Solver++ of order 1 or 2; stochastic in its SDE variant."""

    defaults: ClassVar[dict[str, Any]] = {
        **BETA_DEFAULTS,
        "solver_order": 2,
        "prediction_type": "epsilon",
        "algorithm_type": "dpmsolver++",
        "solver_type": "midpoint",
        "use_karras_sigmas": False,
        "lambda_min_clipped": -math.inf,
        "timestep_spacing": "linspace",
        "steps_offset": 0,
        "rescale_betas_zero_snr": False,
    }
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {
        "solver_order": (1, 2),
        "algorithm_type": ("dpmsolver++", "sde-dpmsolver++"),
        "solver_type": ("midpoint", "heun"),
    }

    def step(self, model_output: Any, timestep: int, sample: Any, *,
             noise: Any = None, generator: np.random.Generator | None = None) -> np.ndarray:
        """One multistep update; returns the sample at the next timestep.

        `noise` (SDE variant only): the step's standard-normal draw, else from `generator`.
        diffusers: `scheduler.step(model_output, t, sample, variance_noise=noise).prev_sample`.
        """
        i = self._current_index(timestep)
        x = as_float64(sample)
        n = len(self.timesteps)
        # 1. data prediction, appended to the history
        self._outputs = [*self._outputs[-1:], self._x0(as_float64(model_output), x, i)]
        self.pred_original_sample = result(self._outputs[-1], sample)
        # 2. order: first order while there is no history, and for the last step, which lands
        #    on sigma = 0 where lambda is infinite
        second = self.config["solver_order"] == 2 and self._lower_order_nums >= 1 and i != n - 1
        # 3. exponential-integrator update from lambda_s to lambda_t
        alpha_t, sigma_t = self._alpha_sigma(self.sigmas[i + 1])
        _, sigma_s = self._alpha_sigma(self.sigmas[i])
        h = self._lambda(i + 1) - self._lambda(i)
        d0 = self._outputs[-1]
        if second:
            r0 = (self._lambda(i) - self._lambda(i - 1)) / h
            d1 = (self._outputs[-1] - self._outputs[-2]) / r0
        heun = self.config["solver_type"] == "heun"
        if self.config["algorithm_type"] == "dpmsolver++":
            phi = math.expm1(-h)  # exp(-h) - 1
            prev = sigma_t / sigma_s * x - alpha_t * phi * d0
            if second:
                weight = alpha_t * (phi / h + 1.0) if heun else -0.5 * alpha_t * phi
                prev = prev + weight * d1
        else:
            # SDE variant (eq. 18 of the paper): contracts x and adds fresh noise
            phi = -math.expm1(-2.0 * h)  # 1 - exp(-2h)
            prev = sigma_t / sigma_s * math.exp(-h) * x + alpha_t * phi * d0
            if second:
                weight = alpha_t * (phi / (-2.0 * h) + 1.0) if heun else 0.5 * alpha_t * phi
                prev = prev + weight * d1
            prev = prev + sigma_t * math.sqrt(phi) * self._noise(x.shape, noise, generator)
        self._lower_order_nums = min(self._lower_order_nums + 1, self.config["solver_order"])
        self._step_index = i + 1
        return result(prev, sample)
