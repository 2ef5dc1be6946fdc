"""sCM's multistep sampler (Sana Sprint; Lu and Song 2024, arXiv:2410.11081): diffusers'
SCMScheduler, TrigFlow's x_s = cos(s) x0 + sin(s) z with z ~ N(0, sigma_data^2).

Timesteps are angles: [max_timesteps, intermediate_timesteps, 0] for two steps, else n + 1
evenly from max_timesteps (pi/2, pure noise) to 0. A step turns the model's TrigFlow output
F into x0 = cos(s) x - sin(s) F, then draws fresh noise and goes to the next angle t:
cos(t) x0 + sin(t) sigma_data z (the last step, t = 0, keeps x0 though it draws z too, as
diffusers does). The pipeline runs the first n timesteps.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from ._base import Scheduler, as_float64, result

__all__ = ["SCMScheduler"]


class SCMScheduler(Scheduler):
    """TrigFlow consistency sampling from `sigma_data`-scaled noise. Stochastic (one normal
    draw a step from the generator)."""

    # the beta fields only feed the base class's table, which TrigFlow never reads
    defaults: ClassVar[dict[str, Any]] = {
        "num_train_timesteps": 1000, "prediction_type": "trigflow", "sigma_data": 0.5,
        "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
    }
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {"prediction_type": ("trigflow",)}

    def set_timesteps(self, num_inference_steps: int, *, max_timesteps: float = 1.57080,
                      intermediate_timesteps: float | None = None) -> None:
        """n + 1 angles from `max_timesteps` to 0, or with `intermediate_timesteps` (two
        steps only) [max, intermediate, 0]. ValueError for an intermediate angle at another
        step count. diffusers: `set_timesteps(n, max_timesteps=, intermediate_timesteps=)`."""
        n = self._check_steps(num_inference_steps)
        if intermediate_timesteps is not None and n != 2:
            raise ValueError(f"an intermediate timestep is for 2 steps, got {n} steps: leave "
                             "it out")
        angles = (np.array([max_timesteps, intermediate_timesteps, 0.0])
                  if intermediate_timesteps is not None
                  else np.linspace(max_timesteps, 0, n + 1, dtype=np.float32))
        # diffusers holds them as float32 tensors
        self._reset(angles.astype(np.float32).astype(np.float64), n)

    def step(self, model_output: Any, timestep: float, sample: Any, *,
             noise: Any = None, generator: np.random.Generator | None = None) -> np.ndarray:
        """One step from angle s to the next angle t; `noise` the step's standard-normal draw,
        else from `generator`. diffusers: `scheduler.step(model_output, s, sample,
        generator=)[0]`."""
        i = self._current_index(timestep)
        s, t = self.timesteps[i], self.timesteps[i + 1]
        x = as_float64(sample)
        # 1. TrigFlow's data prediction
        x0 = math.cos(s) * x - math.sin(s) * as_float64(model_output)
        self.pred_original_sample = result(x0, sample)
        # 2. noised again to the next angle
        z = self._noise(x.shape, noise, generator) * self.config["sigma_data"]
        self._step_index = i + 1
        return result(math.cos(t) * x0 + math.sin(t) * z, sample)
