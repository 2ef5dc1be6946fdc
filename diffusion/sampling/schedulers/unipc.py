"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework"):
diffusers' UniPCMultistepScheduler."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from ..model_sampling import BETA_DEFAULTS
from ._base import as_float64, result
from ._multistep import MultistepScheduler

__all__ = ["UniPCMultistepScheduler"]


class UniPCMultistepScheduler(MultistepScheduler):
    """Multistep predictor (UniP) plus a corrector (UniC) that reuses the model call of the
    next step, so it costs nothing extra. Deterministic. WebUI name: "UniPC"."""

    defaults: ClassVar[dict[str, Any]] = {
        **BETA_DEFAULTS,
        "solver_order": 2,
        "prediction_type": "epsilon",
        "predict_x0": True,
        "solver_type": "bh2",
        "lower_order_final": True,
        "disable_corrector": (),
        "use_karras_sigmas": False,
        "sigma_min": None,
        "sigma_max": None,
        "timestep_spacing": "linspace",
        "steps_offset": 0,
        "rescale_betas_zero_snr": False,
    }
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {
        "solver_order": (1, 2, 3),
        # the noise-prediction form cannot land on the final sigma = 0 (diffusers yields NaN)
        "predict_x0": (True,),
        "solver_type": ("bh1", "bh2"),
    }

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose `num_inference_steps` integer timesteps (descending) and their sigmas."""
        super().set_timesteps(num_inference_steps)
        self._last_sample: np.ndarray | None = None
        self._this_order = 1

    def _update(self, x: np.ndarray, t: int, order: int,
                model_t: np.ndarray | None = None) -> np.ndarray:
        """B(h) update from schedule index t - 1 to t with the stored outputs: the predictor
        (UniP, eq. 7), or with `model_t` (the model's output at t) the corrector (UniC)."""
        s0 = t - 1
        alpha_t, sigma_t = self._alpha_sigma(self.sigmas[t])
        _, sigma_s0 = self._alpha_sigma(self.sigmas[s0])
        h = self._lambda(t) - self._lambda(s0)
        m0 = self._outputs[-1]
        # 1. ratios r_k of earlier lambda steps and the divided differences D1_k
        rks = [(self._lambda(s0 - k) - self._lambda(s0)) / h for k in range(1, order)]
        d1s = [(self._outputs[-(k + 1)] - m0) / rk for k, rk in enumerate(rks, start=1)]
        rks.append(1.0)
        # 2. phi functions of hh and the linear system R rho = b (Algorithm 1 of the paper)
        hh = -h
        h_phi_1 = math.expm1(hh)
        b_h = hh if self.config["solver_type"] == "bh1" else h_phi_1
        h_phi_k, factorial, b = h_phi_1 / hh - 1, 1, []
        for k in range(1, order + 1):
            b.append(h_phi_k * factorial / b_h)
            factorial *= k + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        big_r = np.array([[rk ** (k - 1) for rk in rks] for k in range(1, order + 1)])
        # 3. weighted sum of the differences (fixed 1/2 in the low-order cases, as the paper)
        if model_t is None:
            rhos = [0.5] if order == 2 else (
                np.linalg.solve(big_r[:-1, :-1], b[:-1]) if order > 2 else [])
            res = sum(rho * d for rho, d in zip(rhos, d1s))
        else:
            rhos = [0.5] if order == 1 else np.linalg.solve(big_r, b)
            res = sum(rho * d for rho, d in zip(rhos[:-1], d1s)) + rhos[-1] * (model_t - m0)
        # 4. exponential-integrator base step plus the correction (none for a first-order
        #    prediction: with bh1 onto sigma = 0, b_h is infinite)
        base = sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * m0
        return base if model_t is None and not d1s else base - alpha_t * b_h * res

    def step(self, model_output: Any, timestep: int, sample: Any, *,
             noise: Any = None, generator: np.random.Generator | None = None) -> np.ndarray:
        """Correct `sample` with this model output (UniC), then predict the next sample (UniP).

        `noise`/`generator` are accepted for a uniform interface and unused.
        diffusers: `scheduler.step(model_output, t, sample).prev_sample`.
        """
        i = self._current_index(timestep)
        x = as_float64(sample)
        converted = self._x0(as_float64(model_output), x, i)
        self.pred_original_sample = result(converted, sample)
        # 1. corrector: refine the previous prediction now that the model has seen it
        if i > 0 and i - 1 not in self.config["disable_corrector"] and \
                self._last_sample is not None:
            x = self._update(self._last_sample, i, self._this_order, model_t=converted)
        # 2. history of converted outputs
        self._outputs = [*self._outputs[-(self.config["solver_order"] - 1):], converted] \
            if self.config["solver_order"] > 1 else [converted]
        # 3. order: limited by the history and, near the end, by the steps left
        order = self.config["solver_order"]
        if self.config["lower_order_final"]:
            order = min(order, len(self.timesteps) - i)
        self._this_order = min(order, self._lower_order_nums + 1)
        # 4. predictor
        self._last_sample = x
        prev = self._update(x, i + 1, self._this_order)
        self._lower_order_nums = min(self._lower_order_nums + 1, self.config["solver_order"])
        self._step_index = i + 1
        return result(prev, sample)
