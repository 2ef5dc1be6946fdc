"""DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models"): diffusers' DDIMScheduler."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..model_sampling import BETA_DEFAULTS
from ._base import Scheduler, as_float64, result, spaced_timesteps

__all__ = ["DDIMScheduler"]


class DDIMScheduler(Scheduler):
    """Deterministic at eta = 0 (the default), DDPM-like noise at eta = 1. WebUI: "DDIM"."""

    defaults: ClassVar[dict[str, Any]] = {
        **BETA_DEFAULTS,
        "clip_sample": True,
        "clip_sample_range": 1.0,
        "set_alpha_to_one": True,
        "steps_offset": 0,
        "prediction_type": "epsilon",
        "timestep_spacing": "leading",
        "rescale_betas_zero_snr": False,
    }

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        # abar "before" the last step: 1 (a clean image) or abar_0, as the model was trained
        self.final_alpha_cumprod = 1.0 if self.config["set_alpha_to_one"] else \
            float(self.alphas_cumprod[0])

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose `num_inference_steps` integer timesteps (descending) for sampling."""
        self._check_steps(num_inference_steps)
        self._reset(spaced_timesteps(self.config, num_inference_steps,
                                     round_linspace=True).astype(np.int64))

    def step(self, model_output: Any, timestep: int, sample: Any, *, eta: float = 0.0,
             noise: Any = None, generator: np.random.Generator | None = None,
             direction_output: Any = None) -> np.ndarray:
        """One DDIM step (eq. 12 of the paper); returns x_{t-1}.

        `eta` scales the added noise (0: deterministic); `noise` is that noise's standard-normal
        draw, else it comes from `generator`. `direction_output`: another model output whose
        noise prediction points back to x_t (CFG++, Chung et al. 2024: the unconditional one,
        while x0 comes from the guided `model_output`; the WebUI's "DDIM CFG++").
        diffusers: `scheduler.step(model_output, t, sample, eta=eta,
        variance_noise=noise).prev_sample`.
        """
        i = self._current_index(timestep)
        x, out = as_float64(sample), as_float64(model_output)
        t = int(timestep)
        # diffusers steps back by a fixed stride whatever the spacing; we keep its schedule
        prev_t = t - self.config["num_train_timesteps"] // self.num_inference_steps
        alpha_prod = self.alphas_cumprod[t]
        alpha_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        # 1. predicted x0 and predicted noise
        x0, eps = self._x0_from_alpha(out, x, alpha_prod)
        if direction_output is not None:
            _, eps = self._x0_from_alpha(as_float64(direction_output), x, alpha_prod)
        if self.config["clip_sample"]:
            bound = self.config["clip_sample_range"]
            x0 = np.clip(x0, -bound, bound)
        self.pred_original_sample = result(x0, sample)
        # 2. variance sigma_t^2 (eq. 16) scaled by eta
        variance = (1 - alpha_prev) / (1 - alpha_prod) * (1 - alpha_prod / alpha_prev)
        std = eta * variance**0.5
        # 3. "direction pointing to x_t" plus the rescaled x0 (eq. 12)
        prev = alpha_prev**0.5 * x0 + (1 - alpha_prev - std**2) ** 0.5 * eps
        # 4. random noise when eta > 0
        if eta > 0:
            prev = prev + std * self._noise(x.shape, noise, generator)
        self._step_index = i + 1
        return result(prev, sample)
