"""The WebUI's denoising: its k-diffusion samplers over a discrete-timestep denoiser
(diffusion.sampling.kdiffusion), each image with its own seed, then its hires pass if asked.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ...noise.rng import make_generator
from ...sampling import kdiffusion
from ...sampling.kdiffusion_pass import WebUISeeds, sample_pass, sampler_fields
from ...sampling.model_sampling import DiscreteSchedule
from ...upscalers.interpolation import HiresFix
from ..observer import Observer
from .prepare import InpaintInputs, Pass, hires_latents
from .unet_model import UNetParts

__all__ = ["run_kdiffusion"]


def run_kdiffusion(pipe: UNetParts, r: Pass, sampler: str, schedule: str,
                   init_image: Any, mask: Any, observer: Observer, *, seeds: WebUISeeds,
                   options: kdiffusion.SamplerOptions, hires: HiresFix | None = None,
                   hires_sampler: tuple[str, str | None] | None = None
                   ) -> tuple[np.ndarray, dict[str, Any]]:
    """The final latents of `r` with the WebUI's `sampler` and schedule type, and the
    infotext fields the run adds; the hires pass with `hires_sampler` (label, schedule type)
    where given, else the same."""
    # 1. the sigmas (img2img: the schedule's tail, from the strength)
    discrete = DiscreteSchedule.from_config(pipe.scheduler_config)
    img2img = r.mode != "txt2img"
    plan = kdiffusion.plan(sampler, schedule, r.steps, discrete, is_sdxl=pipe.is_sdxl,
                           strength=r.strength if img2img else None)
    # 2. img2img / inpaint inputs: the init latents (the VAE posterior draws from the seed;
    # latent noise / nothing where the mask is, as the masked content says), the latent mask
    # the sampling keeps the rest with (with every UNet, as the WebUI's p.mask) and the
    # 9-channel UNet's inputs
    inputs = InpaintInputs(pipe, r, init_image, mask,
                           inpainting_model=pipe.is_inpainting_model)
    extra = keep = init_latent = None
    if img2img:
        generator = make_generator(r.rng, r.seed)
        init_latent = inputs.start(inputs.image_latents(generator), seeds.seeds)
    if r.mode == "inpaint":
        keep = inputs.keep()
        if pipe.is_inpainting_model:
            extra = inputs.nine_channel(generator)
    # 3. the pass; the WebUI counts prompt-editing steps in model evaluations: twice per step
    # for the second-order samplers
    evaluations = r.steps * (2 if plan.info.second_order else 1)
    x = _pass(pipe, r, plan, discrete, seeds, init_latent, evaluations, observer, extra=extra,
              keep=keep, options=options)
    fields: dict[str, Any] = {"seeds": seeds.seeds, "schedule": plan.schedule_label,
                              **sampler_fields(plan.info, options, seeds)}
    if hires is None:
        return x, fields
    # 4. the hires pass: the last `steps` of a schedule stretched by 1 / denoise
    x, r = hires_latents(pipe, r, x, hires)
    r = replace(r, first_pass_steps=evaluations)
    steps, total = hires.schedule_steps(r.steps)
    if hires_sampler is not None:
        sampler, schedule = hires_sampler[0], hires_sampler[1] or schedule
    plan = kdiffusion.plan(sampler, schedule, total, discrete, t_enc=steps - 1,
                           is_sdxl=pipe.is_sdxl)
    x = _pass(pipe, r, plan, discrete, seeds, x, steps * (2 if plan.info.second_order else 1),
              observer, options=options, first_pass=False)
    return x, fields


def _pass(pipe: UNetParts, r: Pass, plan: kdiffusion.SamplingPlan,
          discrete: DiscreteSchedule, seeds: WebUISeeds, init_latent: np.ndarray | None,
          evaluations: int, observer: Observer, *, extra: np.ndarray | None = None,
          keep: np.ndarray | None = None, options: kdiffusion.SamplerOptions,
          first_pass: bool = True) -> np.ndarray:
    """One sampling pass at r's size from pure noise or from `init_latent` + noise: the one
    k-diffusion pass (diffusion.sampling.kdiffusion_pass) on the guided UNet."""
    # the guided denoiser (a refiner's hand-off inside)
    unet = pipe.guided(r, evaluations, discrete=discrete)
    model = kdiffusion.CFGDenoiser(unet, discrete, r.cfg_scale, extra=extra, keep=keep,
                                   init_latent=init_latent)
    scale = pipe.vae_scale_factor
    return sample_pass(plan, discrete, model, seeds, rng=r.rng,
                       shape=(pipe.latent_channels, r.height // scale, r.width // scale),
                       options=options, init_latent=init_latent, keep=keep,
                       callback=observer.step, denoised=observer.on_denoised,
                       first_pass=first_pass, noise_multiplier=r.noise_multiplier)
