"""PLMS (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models"): PNDMScheduler.

Only the linear multistep part (`skip_prk_steps=True`), which is what Stable Diffusion uses.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..model_sampling import BETA_DEFAULTS
from ._base import Scheduler, as_float64, result, spaced_timesteps

__all__ = ["PNDMScheduler"]


class PNDMScheduler(Scheduler):
    """4th-order pseudo linear multistep on the noise prediction; deterministic. WebUI: "PLMS"."""

    defaults: ClassVar[dict[str, Any]] = {
        **BETA_DEFAULTS,
        "skip_prk_steps": True,
        "set_alpha_to_one": False,
        "prediction_type": "epsilon",
        "timestep_spacing": "leading",
        "steps_offset": 0,
    }
    # the Runge-Kutta warm-up (skip_prk_steps=False) is diffusers' default but no SD model uses it
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {"skip_prk_steps": (True,)}

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.final_alpha_cumprod = 1.0 if self.config["set_alpha_to_one"] else \
            float(self.alphas_cumprod[0])

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose the timesteps; the second-to-last one repeats (PLMS' warm-up), so there
        are `num_inference_steps` + 1 model calls."""
        steps = spaced_timesteps(self.config, num_inference_steps, round_linspace=True)[::-1]
        plms = np.concatenate([steps[:-1], steps[-2:-1], steps[-1:]])[::-1]
        self._reset(plms.astype(np.int64), num_inference_steps)
        self._ets: list[np.ndarray] = []
        self._counter = 0
        self._cur_sample: np.ndarray | None = None

    def step(self, model_output: Any, timestep: int, sample: Any, *,
             noise: Any = None, generator: np.random.Generator | None = None) -> np.ndarray:
        """One PLMS step; returns x_{t-1}. `noise`/`generator` are unused.

        diffusers: `scheduler.step(model_output, t, sample).prev_sample`.
        """
        i = self._current_index(timestep)
        x, out = as_float64(sample), as_float64(model_output)
        stride = self.config["num_train_timesteps"] // self.num_inference_steps
        t, prev_t = int(timestep), int(timestep) - stride
        # 1. keep the noise predictions; the 2nd call re-evaluates the 1st step (warm-up)
        if self._counter != 1:
            self._ets = [*self._ets[-3:], out]
        else:
            prev_t, t = t, t + stride
        # 2. combine them with Adams-Bashforth weights of the available order
        ets = self._ets
        if len(ets) == 1 and self._counter == 0:
            eps, self._cur_sample = out, x
        elif len(ets) == 1 and self._counter == 1:
            assert self._cur_sample is not None
            eps, x, self._cur_sample = (out + ets[-1]) / 2, self._cur_sample, None
        elif len(ets) == 2:
            eps = (3 * ets[-1] - ets[-2]) / 2
        elif len(ets) == 3:
            eps = (23 * ets[-1] - 16 * ets[-2] + 5 * ets[-3]) / 12
        else:
            eps = (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4]) / 24
        # 3. transfer x_t to x_{t-1} with that noise estimate (eq. 11 of the paper), which is
        #    DDIM's step from the x0 it predicts (kept for previews)
        prev, x0 = self._transfer(x, t, prev_t, eps)
        self.pred_original_sample = result(x0, sample)
        self._counter += 1
        self._step_index = i + 1
        return result(prev, sample)

    def _transfer(self, x: np.ndarray, t: int, prev_t: int,
                  eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x_{prev_t}, the x0 that noise estimate predicts at x_t)."""
        alpha_prod = self.alphas_cumprod[t]
        alpha_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        beta, beta_prev = 1 - alpha_prod, 1 - alpha_prev
        if self.config["prediction_type"] == "v_prediction":
            eps = alpha_prod**0.5 * eps + beta**0.5 * x
        denominator = alpha_prod * beta_prev**0.5 + (alpha_prod * beta * alpha_prev) ** 0.5
        prev = (alpha_prev / alpha_prod) ** 0.5 * x - (alpha_prev - alpha_prod) * eps / denominator
        return prev, (x - beta**0.5 * eps) / alpha_prod**0.5
