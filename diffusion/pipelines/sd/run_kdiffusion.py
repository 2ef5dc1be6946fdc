"""The WebUI's denoising: its k-diffusion samplers over a discrete-timestep denoiser
(diffusion.pipelines.sampling), each image with its own seed, then its hires pass if asked.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ...noise.image_noise import ImageNoise
from ...noise.rng import make_generator
from ...samplers.denoiser import DiscreteSchedule
from ...upscalers.interpolation import HiresFix
from .. import sampling
from ..generation import draw_seed
from ..observer import Observer
from .prepare import InpaintInputs, Pass, hires_latents
from .unet_model import UNetParts

__all__ = ["WebUISeeds", "run_kdiffusion"]


@dataclass(frozen=True)
class WebUISeeds:
    """A batch's seeds as the WebUI gives them: image k has seed + k (all the same seed when a
    variation seed varies them), variation seed subseed + k, and the eta noise seed delta."""

    seeds: list[int]
    subseeds: list[int]
    subseed_strength: float
    eta_noise_seed_delta: int
    resize_from: tuple[int, int] | None = None  # latent (height, width) of "Seed resize from"

    @classmethod
    def webui(cls, seed: int, batch: int, subseed: int | None, subseed_strength: float,
              eta_noise_seed_delta: int, resize_from: tuple[int, int] | None = None
              ) -> WebUISeeds:
        varied = subseed_strength != 0
        subseed = draw_seed(subseed)
        return cls([seed + (0 if varied else k) for k in range(batch)],
                   [int(subseed) + k for k in range(batch)], float(subseed_strength),
                   int(eta_noise_seed_delta), resize_from)

    def noise(self, rng: str, shape: tuple[int, int, int], *,
              first_pass: bool = True) -> ImageNoise:
        """Fresh generators for one pass over latents of `shape` (C, H, W); seed resize
        applies to the first pass only (the hires pass draws at its own size)."""
        return ImageNoise(rng, self.seeds, shape, subseeds=self.subseeds,
                          subseed_strength=self.subseed_strength,
                          eta_noise_seed_delta=self.eta_noise_seed_delta,
                          resize_from=self.resize_from if first_pass else None)

    def fields(self, uses_ensd: bool) -> dict[str, Any]:
        """Settings for the infotext: variation seeds when used, ENSD where it matters."""
        fields: dict[str, Any] = {}
        if self.subseed_strength:
            fields.update(subseed=self.subseeds[0], subseeds=self.subseeds,
                          subseed_strength=self.subseed_strength)
        if self.eta_noise_seed_delta and uses_ensd:
            fields["ensd"] = self.eta_noise_seed_delta
        return fields


def run_kdiffusion(pipe: UNetParts, r: Pass, sampler: str, schedule: str,
                   init_image: Any, mask: Any, observer: Observer, *, seeds: WebUISeeds,
                   options: sampling.SamplerOptions,
                   hires: HiresFix | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The final latents of `r` with the WebUI's `sampler` and schedule type, and the
    infotext fields the run adds."""
    # 1. the sigmas (img2img: the schedule's tail, from the strength)
    discrete = DiscreteSchedule.from_config(pipe.scheduler_config)
    img2img = r.mode != "txt2img"
    plan = sampling.plan(sampler, schedule, r.steps, discrete, is_sdxl=pipe.is_sdxl,
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
                              **seeds.fields(plan.info.uses_ensd),
                              "sampler_fields": options.infotext(plan.info)}
    if hires is None:
        return x, fields
    # 4. the hires pass: the last `steps` of a schedule stretched by 1 / denoise
    x, r = hires_latents(pipe, r, x, hires)
    r = replace(r, first_pass_steps=evaluations)
    steps, total = hires.schedule_steps(r.steps)
    plan = sampling.plan(sampler, schedule, total, discrete, t_enc=steps - 1,
                         is_sdxl=pipe.is_sdxl)
    x = _pass(pipe, r, plan, discrete, seeds, x, steps * (2 if plan.info.second_order else 1),
              observer, options=options, first_pass=False)
    return x, fields


def _pass(pipe: UNetParts, r: Pass, plan: sampling.SamplingPlan,
          discrete: DiscreteSchedule, seeds: WebUISeeds, init_latent: np.ndarray | None,
          evaluations: int, observer: Observer, *, extra: np.ndarray | None = None,
          keep: np.ndarray | None = None, options: sampling.SamplerOptions,
          first_pass: bool = True) -> np.ndarray:
    """One sampling pass at r's size from pure noise or from `init_latent` + noise."""
    # 1. each image's noise from its own seed
    scale = pipe.vae_scale_factor
    noise = seeds.noise(r.rng, (pipe.latent_channels, r.height // scale, r.width // scale),
                        first_pass=first_pass)
    first = noise.first() * plan.sigmas[0]
    x = first if init_latent is None else init_latent + first
    # 2. the guided denoiser (a refiner's hand-off inside)
    unet = pipe.guided(r, evaluations, discrete=discrete)
    model = sampling.CFGDenoiser(unet, discrete, r.cfg_scale, extra=extra, keep=keep,
                                 init_latent=init_latent)
    total = len(plan.sigmas) - 1

    def callback(i: int, latents: np.ndarray) -> bool:
        return observer.step(i + 1, total, latents)

    # 3. the sampler's loop
    x = sampling.sample(plan, model, x, seeds=seeds.seeds, image_noise=noise,
                        discrete=discrete, callback=callback,
                        options=options.kwargs(plan.info))
    # 4. inpaint: the kept region is the init image's (processing.py, Img2Img.sample)
    return sampling.kept(x, keep, init_latent)
