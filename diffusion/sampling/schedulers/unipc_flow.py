"""UniPC on the flow-matching path (Wan's scheduler): diffusers' UniPCMultistepScheduler with
`use_flow_sigmas=True` and `prediction_type="flow_prediction"`.

The same predictor-corrector as `unipc`, on x_sigma = (1 - sigma) x0 + sigma noise: alpha_t =
1 - sigma, sigma_t = sigma, the model's velocity v giving x0 = x - sigma v. Sigmas run from 1
to 1/num_train_timesteps over n steps (the last dropped), bent by `flow_shift` (shift sigma /
(1 + (shift - 1) sigma)), then 0; the timesteps the model embeds are sigma x 1000 truncated
to integers, as diffusers stores them. With `use_karras_sigmas` (Cosmos Predict2.5's) the
sigmas are instead Karras' EDM sigmas from `sigma_max` down to `sigma_min` (rho 7) as flow
sigmas s / (1 + s), their timesteps likewise truncated; `final_sigmas_type` "sigma_min"
ends on the last of them rather than 0.

Not in `SCHEDULERS`: a flow pipeline builds it with `from_config(scheduler_config)` where the
folder's UniPC config sets `use_flow_sigmas`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ._sigmas import karras_sigmas
from .unipc import UniPCMultistepScheduler

__all__ = ["FlowUniPCMultistepScheduler", "is_flow_unipc"]


def is_flow_unipc(config: dict[str, Any]) -> bool:
    """True for a diffusers UniPC scheduler_config.json on flow sigmas (Wan's)."""
    return (config.get("_class_name") == "UniPCMultistepScheduler"
            and bool(config.get("use_flow_sigmas")))


class FlowUniPCMultistepScheduler(UniPCMultistepScheduler):
    """UniPC over flow sigmas; a velocity-predicting model. Deterministic."""

    defaults: ClassVar[dict[str, Any]] = {
        **UniPCMultistepScheduler.defaults,
        "prediction_type": "flow_prediction",
        "use_flow_sigmas": True,
        "flow_shift": 1.0,
        "use_dynamic_shifting": False,
        "final_sigmas_type": "zero",
        "shift_terminal": None,
    }
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {
        **UniPCMultistepScheduler.choices,
        "prediction_type": ("flow_prediction",),
        "use_flow_sigmas": (True,),
        "use_dynamic_shifting": (False,),
        "final_sigmas_type": ("zero", "sigma_min"),
        "shift_terminal": (None,),
    }

    def set_timesteps(self, num_inference_steps: int) -> None:
        """`num_inference_steps` shifted flow sigmas from 1 (less 1e-6, so log(sigma) of
        the first step's partner stays finite, as diffusers) and their integer timesteps; or
        with `use_karras_sigmas` Karras' as flow sigmas (the module's note)."""
        n = self._check_steps(num_inference_steps)
        total = self.config["num_train_timesteps"]
        if self.config["use_karras_sigmas"]:
            low, high = self.config["sigma_min"], self.config["sigma_max"]
            if low is None or high is None:
                raise ValueError("a UniPC scheduler on flow sigmas with use_karras_sigmas needs "
                                 "sigma_min and sigma_max in its scheduler_config.json")
            edm = karras_sigmas(float(low), float(high), n)
            sigmas = edm / (edm + 1)
        else:
            shift = self.config["flow_shift"]
            sigmas = np.linspace(1, 1 / total, n + 1)[:-1]
            sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
            if abs(sigmas[0] - 1) < 1e-6:
                sigmas[0] -= 1e-6
        timesteps = (sigmas * total).astype(np.int64)  # torch's .to(int64) truncates
        last = sigmas[-1] if self.config["final_sigmas_type"] == "sigma_min" else 0.0
        self.sigmas = np.append(sigmas, last).astype(np.float32).astype(np.float64)
        self._reset(timesteps)
        self._outputs = []
        self._lower_order_nums = 0
        self._last_sample = None
        self._this_order = 1

    @staticmethod
    def _alpha_sigma(sigma: Any) -> tuple[Any, Any]:
        """(alpha_t, sigma_t) = (1 - sigma, sigma) on the flow path."""
        return 1 - sigma, sigma

    def _x0(self, model_output: np.ndarray, sample: np.ndarray, index: int) -> np.ndarray:
        """1. the velocity converted to a data prediction: x - sigma v."""
        return sample - self.sigmas[index] * model_output

    def _update(self, x: np.ndarray, t: int, order: int,
                model_t: np.ndarray | None = None) -> np.ndarray:
        """UniPCMultistepScheduler._update, except that a step onto the same sigma (the last
        of `final_sigmas_type` "sigma_min") leaves x as it is: diffusers' update is then a sum
        of terms that are all 0 (its phi functions of h = 0)."""
        if self.sigmas[t] == self.sigmas[t - 1]:
            return x
        return super()._update(x, t, order, model_t)
