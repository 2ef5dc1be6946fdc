"""Sana Sprint's sampling, as diffusers' SanaSprintPipeline runs it: sCM consistency steps
(schedulers.scm) in TrigFlow's angles from sigma_data-scaled noise, the transformer fed each
angle s as the flow time sin(s) / (cos(s) + sin(s)) with its input and output turned between
TrigFlow and flow matching, the guidance scale embedded (times the transformer's
`guidance_embeds_scale`), no negative prompt. img2img as SanaSprintImg2ImgPipeline: the
schedule's tail that `strength` keeps, from the picture's latents turned to its first angle
with the noise (cos(s) x0 + sin(s) z, both sigma_data-scaled).

    x0 = run_scm(pipe, ["a red circle"], (1, 32, 32, 32), steps=2, guidance_scale=4.5,
                 generator=make_generator("torch", 7))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...sampling.schedulers.scm import SCMScheduler
from .start import StepCallback

__all__ = ["run_scm"]


def run_scm(pipe: Any, prompts: Sequence[str], shape: tuple[int, ...], *, steps: int,
            guidance_scale: float, generator: Any, max_timesteps: float = 1.57080,
            intermediate_timesteps: float | None = None, max_sequence_length: int = 300,
            latents: np.ndarray | None = None, callback: StepCallback | None = None,
            image_latents: np.ndarray | None = None, strength: float = 1.0) -> np.ndarray:
    """The denoised latents (B, C, h, w) of `prompts` after `steps` SCM steps of `pipe` (a
    SanaPipeline of a Sprint folder: its `predict`, `prompt_states`, `scheduler_config`,
    `transformer`), from `latents` or a standard normal draw of `shape` from `generator`
    (which also draws each step's noise); `intermediate_timesteps`: the middle angle of a
    two-step run (1.3 unless given); `callback(done, total, denoised)` after each step (False
    stops); `image_latents` (1 or B, C, h, w; the DC-AE's times its scaling factor): img2img
    from them at `strength` (in (0, 1]; ValueError in one line where it leaves no step).
    diffusers: `SanaSprintPipeline(..., output_type="latent").images`, with `image_latents`
    SanaSprintImg2ImgPipeline's with `strength=`."""
    if intermediate_timesteps is None and steps == 2:
        intermediate_timesteps = 1.3  # SanaSprintPipeline's default
    scheduler = SCMScheduler.from_config(pipe.scheduler_config)
    scheduler.set_timesteps(steps, max_timesteps=max_timesteps,
                            intermediate_timesteps=intermediate_timesteps)
    sigma_data = np.float32(scheduler.config["sigma_data"])
    noise = generator.standard_normal(shape) if latents is None else latents
    noise = np.asarray(noise, np.float32)
    if noise.shape != shape:
        raise ValueError(f"latents must have shape {shape}, got {noise.shape}")
    x = noise * sigma_data
    begin = 0
    if image_latents is not None:
        # SanaSprintImg2ImgPipeline.get_timesteps: the last int(steps * strength) angles
        begin = int(max(steps - min(steps * strength, steps), 0))
        if begin >= steps:
            raise ValueError(f"strength {strength:g} with {steps} steps leaves no step to "
                             "run; raise the strength or the steps")
        scheduler.set_begin_index(begin)
        s = np.float32(scheduler.timesteps[begin])
        x = (np.cos(s) * np.asarray(image_latents, np.float32) * sigma_data
             + np.sin(s) * x).astype(np.float32)
    states, mask = pipe.prompt_states(prompts, max_sequence_length=max_sequence_length)
    config = pipe.transformer.config
    guidance = np.full(shape[0], np.float32(guidance_scale)
                       * np.float32(config.get("guidance_embeds_scale", 0.1)), np.float32)
    denoised: np.ndarray = x
    angles = scheduler.timesteps[begin:-1]
    for i, angle in enumerate(angles):
        # 1. the angle as a flow time, the latents scaled to that time's flow input
        s = np.float32(angle)
        time = np.sin(s) / (np.cos(s) + np.sin(s))
        norm = np.sqrt(time**2 + (1 - time) ** 2)
        model_in = x / sigma_data * norm
        pred = pipe.predict(model_in, np.full(shape[0], time, np.float32), states, mask,
                            guidance)
        # 2. the flow-matching output as TrigFlow's, then the consistency step
        trig = ((1 - 2 * time) * model_in + (1 - 2 * time + 2 * time**2) * pred) / norm
        x = scheduler.step(trig * sigma_data, float(angle), x, generator=generator)
        assert scheduler.pred_original_sample is not None
        denoised = scheduler.pred_original_sample / sigma_data
        if callback is not None and callback(i + 1, len(angles), denoised) is False:
            break
    return denoised.astype(np.float32)
