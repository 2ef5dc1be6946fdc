"""Latent Consistency Model multistep sampling (Luo et al. 2023): diffusers' LCMScheduler."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..model_sampling import BETA_DEFAULTS
from ._base import Scheduler, as_float64, result

__all__ = ["LCMScheduler"]


class LCMScheduler(Scheduler):
    """Each step maps x_t to a clean estimate (the consistency function) and re-noises it to the
    next timestep; 2-8 steps with an LCM-distilled UNet or LoRA. WebUI name: "LCM"."""

    defaults: ClassVar[dict[str, Any]] = {
        **BETA_DEFAULTS,
        "original_inference_steps": 50,
        "clip_sample": False,
        "clip_sample_range": 1.0,
        "set_alpha_to_one": True,
        "prediction_type": "epsilon",
        "timestep_scaling": 10.0,
        "rescale_betas_zero_snr": False,
    }

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.final_alpha_cumprod = 1.0 if self.config["set_alpha_to_one"] else \
            float(self.alphas_cumprod[0])

    def set_timesteps(self, num_inference_steps: int, *, strength: float = 1.0) -> None:
        """Pick `num_inference_steps` of the distillation schedule's timesteps.

        `strength` < 1 (img2img) keeps only the first `strength` fraction of that schedule.
        diffusers: `scheduler.set_timesteps(n, strength=strength)`.
        """
        original = self.config["original_inference_steps"]
        stride = self.config["num_train_timesteps"] // original
        # the timesteps the model was distilled on: stride - 1, 2 * stride - 1, ...
        origin = np.arange(1, int(original * strength) + 1) * stride - 1
        if not 0 < num_inference_steps <= min(original, len(origin)):
            raise ValueError(f"LCM: num_inference_steps must be in 1..{min(original, len(origin))}"
                             f" (original_inference_steps={original}, strength={strength}), "
                             f"got {num_inference_steps}")
        picks = np.floor(np.linspace(0, len(origin), num_inference_steps, endpoint=False))
        self._reset(origin[::-1][picks.astype(np.int64)].astype(np.int64))

    def step(self, model_output: Any, timestep: int, sample: Any, *,
             noise: Any = None, generator: np.random.Generator | None = None) -> np.ndarray:
        """One LCM step; returns the sample for the next timestep (the clean estimate on the
        last step). `noise`: standard-normal draw for re-noising, else from `generator`.

        diffusers: `scheduler.step(model_output, t, sample, generator=g).prev_sample`.
        """
        i = self._current_index(timestep)
        x, out = as_float64(sample), as_float64(model_output)
        t = int(timestep)
        last = i == len(self.timesteps) - 1
        prev_t = t if last else int(self.timesteps[i + 1])
        alpha_prod = self.alphas_cumprod[t]
        alpha_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        # 1. boundary-condition scalings c_skip, c_out (sigma_data = 0.5)
        scaled = t * self.config["timestep_scaling"]
        c_skip = 0.25 / (scaled**2 + 0.25)
        c_out = scaled / (scaled**2 + 0.25) ** 0.5
        # 2. predicted x0
        x0, _ = self._x0_from_alpha(out, x, alpha_prod)
        if self.config["clip_sample"]:
            bound = self.config["clip_sample_range"]
            x0 = np.clip(x0, -bound, bound)
        # 3. consistency-model output
        denoised = c_out * x0 + c_skip * x
        # 4. re-noise to the next timestep (multistep consistency sampling), except at the end
        prev = denoised
        if not last:
            prev = alpha_prev**0.5 * denoised + (1 - alpha_prev) ** 0.5 * \
                self._noise(x.shape, noise, generator)
        self._step_index = i + 1
        return result(prev, sample)
