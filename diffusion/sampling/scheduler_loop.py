"""The loop of the diffusers-style schedulers, written once for UNet and flow models:
diffusers' own pipelines (`sampler="diffusers"`, FLUX's and SD3's), the WebUI's timestep
samplers (DDIM, DDIM CFG++, PLMS, UniPC) and the flow pipelines' Euler.

    latents = scheduler_loop(latents, timesteps, scheduler, predict, after_step=blend,
                             callback=observer.step, denoised=observer.on_denoised)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["Predict", "scheduler_loop"]

Predict = Callable[[np.ndarray, Any, int], tuple[np.ndarray, np.ndarray | None]]
"""predict(model_in, t, i) -> (the guided model output for `scheduler.step`, the output its
direction takes where another: DDIM CFG++'s unconditional noise; else None)."""


def scheduler_loop(latents: np.ndarray, timesteps: Any, scheduler: Any, predict: Predict, *,
                   generator: Any = None,
                   after_step: Callable[[int, np.ndarray], np.ndarray] | None = None,
                   callback: Callable[[int, int, np.ndarray], bool | None] | None = None,
                   denoised: Callable[[np.ndarray], None] | None = None,
                   dtype: Any = None) -> np.ndarray:
    """`latents` after a step of `scheduler` at each of `timesteps`: 1. the scheduler's model
    input, 2. the model's guided output (`predict`: the model and its guidance), 3. the
    scheduler's step (its draws from `generator`; cast to `dtype` where given), and
    `denoised(x0)` with the clean latents that step predicted where the scheduler keeps them
    (its `pred_original_sample`: for previews), 4. `after_step(i, latents)` -> latents
    (inpainting's blend), 5. `callback(done, total, latents)`, which stops the loop by
    returning False. diffusers: the denoising loop of its pipelines' `__call__`."""
    for i, t in enumerate(timesteps):
        output, direction = predict(scheduler.scale_model_input(latents, t), t, i)
        more = {} if direction is None else {"direction_output": direction}
        latents = scheduler.step(output, t, latents, generator=generator, **more)
        if dtype is not None:
            latents = latents.astype(dtype)
        if denoised is not None and scheduler.pred_original_sample is not None:
            denoised(scheduler.pred_original_sample)
        if after_step is not None:
            latents = after_step(i, latents)
        if callback is not None and callback(i + 1, len(timesteps), latents) is False:
            break
    return latents
