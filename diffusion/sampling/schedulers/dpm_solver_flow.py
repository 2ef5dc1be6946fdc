"""DPM-Solver++ on the flow-matching path (Sana's scheduler): diffusers'
DPMSolverMultistepScheduler with `use_flow_sigmas=True` and
`prediction_type="flow_prediction"`.

The same multistep update as `dpm_solver`, on x_sigma = (1 - sigma) x0 + sigma noise: alpha_t
= 1 - sigma, sigma_t = sigma, the model's velocity v giving x0 = x - sigma v. The n sigmas are
1 - linspace(1, 1/num_train_timesteps, n + 1) reversed, the last (0) dropped, bent by
`flow_shift` (shift sigma / (1 + (shift - 1) sigma)), then 0; the timesteps the model embeds
are sigma x 1000 truncated to integers, as diffusers stores them.

Not in `SCHEDULERS`: a flow pipeline builds it with `from_config(scheduler_config)` where the
folder's DPM-Solver config sets `use_flow_sigmas`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .dpm_solver import DPMSolverMultistepScheduler

__all__ = ["FlowDPMSolverMultistepScheduler", "is_flow_dpm_solver"]


def is_flow_dpm_solver(config: dict[str, Any]) -> bool:
    """True for a diffusers DPM-Solver scheduler_config.json on flow sigmas (Sana's)."""
    return (config.get("_class_name") == "DPMSolverMultistepScheduler"
            and bool(config.get("use_flow_sigmas")))


class FlowDPMSolverMultistepScheduler(DPMSolverMultistepScheduler):
    """DPM-Solver++ (order 1 or 2) over flow sigmas; a velocity-predicting model.
    Deterministic."""

    defaults: ClassVar[dict[str, Any]] = {
        **DPMSolverMultistepScheduler.defaults,
        "prediction_type": "flow_prediction",
        "use_flow_sigmas": True,
        "flow_shift": 1.0,
        "use_dynamic_shifting": False,
        "final_sigmas_type": "zero",
    }
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {
        **DPMSolverMultistepScheduler.choices,
        "prediction_type": ("flow_prediction",),
        "algorithm_type": ("dpmsolver++",),
        "use_flow_sigmas": (True,),
        "use_dynamic_shifting": (False,),
        "final_sigmas_type": ("zero",),
        "use_karras_sigmas": (False,),
    }

    def set_timesteps(self, num_inference_steps: int) -> None:
        """`num_inference_steps` shifted flow sigmas below 1 (the first 0.999 before the
        shift) and their integer timesteps."""
        n = self._check_steps(num_inference_steps)
        total = self.config["num_train_timesteps"]
        shift = self.config["flow_shift"]
        sigmas = 1.0 - np.linspace(1, 1 / total, n + 1)
        sigmas = np.flip(shift * sigmas / (1 + (shift - 1) * sigmas))[:-1].copy()
        timesteps = (sigmas * total).astype(np.int64)  # torch's .to(int64) truncates
        self.sigmas = np.append(sigmas, 0.0).astype(np.float32).astype(np.float64)
        self._reset(timesteps)
        self._outputs = []
        self._lower_order_nums = 0

    @staticmethod
    def _alpha_sigma(sigma: Any) -> tuple[Any, Any]:
        """(alpha_t, sigma_t) = (1 - sigma, sigma) on the flow path."""
        return 1 - sigma, sigma

    def _x0(self, model_output: np.ndarray, sample: np.ndarray, index: int) -> np.ndarray:
        """1. the velocity converted to a data prediction: x - sigma v."""
        return sample - self.sigmas[index] * model_output
