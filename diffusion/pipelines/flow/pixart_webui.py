"""The WebUI's k-diffusion samplers on PixArt-α / Σ, as on SD: PixArt predicts noise over a
DDPM schedule (the folder's linear betas, epsilon prediction; the transformer's learned-variance
half is dropped), so the SD families' recipe applies unchanged: the schedule type's sigmas of
the folder's discrete schedule, the transformer seeing x * c_in at timestep sigma_to_t(sigma),
its noise turned into x0 and guided there (uncond + scale * (cond - uncond)), each image's noise
from its own seed (diffusion.sampling.kdiffusion_pass, the pass every family runs). img2img and
inpainting start from the init image's SD VAE latents plus noise at the schedule's tail
(t_enc = strength x steps), as the WebUI's img2img does for SD.

k-diffusion: `sample_<sampler>(DiscreteEpsDDPMDenoiser(transformer, alphas_cumprod), x,
sigmas)` on the WebUI's CFGDenoiser; diffusers has no PixArt img2img to compare with.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...sampling import kdiffusion
from ...sampling.kdiffusion_pass import WebUISeeds, sample_pass
from ...sampling.model_sampling import DiscreteSchedule
from ...sampling.samplers.registry import SAMPLERS
from ..observer import Observer
from ..request import GenerationRequest
from .flow_sampling import resized
from .pixart import PixArtEps

__all__ = ["PIXART_SAMPLERS", "TIMESTEP_SAMPLERS", "pixart_schedule_label", "sample_pixart"]

TIMESTEP_SAMPLERS = ("DDIM", "PLMS", "UniPC")
"""The WebUI's timestep samplers PixArt runs: diffusers' schedulers in the pipeline's own loop
(txt2img, the batch from one seed, as SD runs them; DDIM CFG++, which reads the unguided x0,
is not wired)."""

PIXART_SAMPLERS = tuple(info.name for info in SAMPLERS
                        if info.kind == "k-diffusion" or info.name in TIMESTEP_SAMPLERS)
"""The WebUI's k-diffusion samplers, by label (every one runs on PixArt's noise prediction),
and TIMESTEP_SAMPLERS."""


def _plan(request: GenerationRequest, label: str, discrete: DiscreteSchedule
          ) -> kdiffusion.SamplingPlan:
    schedule = request.sampler_label[1] or "Automatic"
    img2img = request.init_image is not None
    return kdiffusion.plan(label, schedule, int(request.steps), discrete,
                           strength=float(request.strength) if img2img else None)


def pixart_schedule_label(model: Any, request: GenerationRequest) -> str:
    """The infotext's "Schedule type" of a WebUI sampler's run (the resolved type, or
    "Automatic" for a sampler without one of its own; a timestep sampler's as asked, as SD
    writes it)."""
    if request.sampler_label[0] in TIMESTEP_SAMPLERS:
        return request.sampler_label[1] or "Automatic"
    discrete = DiscreteSchedule.from_config(model.pipe.scheduler_config)
    return _plan(request, request.sampler_label[0], discrete).schedule_label


def sample_pixart(model: Any, request: GenerationRequest, label: str, prompts: list[str],
                  seeds: WebUISeeds, width: int, height: int, observer: Observer
                  ) -> np.ndarray:
    """The final latents (B, 4, h, w) float32 of the WebUI sampler `label` with the request's
    schedule type on `model` (a PixArtModel) for `prompts` at width x height: CFG on x0 with
    the negative prompt where the CFG scale is not 1; img2img / inpainting from the request's
    init image (and mask) through `model.webui_start`."""
    pipe = model.pipe
    discrete = DiscreteSchedule.from_config(pipe.scheduler_config)
    plan = _plan(request, label, discrete)
    cfg = float(request.cfg_scale)
    cond = pipe.conditioning(prompts, height=height, width=width, guidance_scale=cfg,
                             negative_prompt=request.negative_prompt, guided=cfg != 1)
    shape = pipe.latent_shape(len(prompts), height, width)
    init, keep = model.webui_start(request, seeds, shape, width, height)
    denoiser = kdiffusion.CFGDenoiser(PixArtEps(pipe, cond), discrete, cfg, keep=keep,
                                      init_latent=init)
    x = sample_pass(plan, discrete, denoiser, resized(seeds, request, shape, width, height),
                    rng=request.rng, shape=(shape[1], shape[2], shape[3]),
                    options=request.sampler_options or kdiffusion.SamplerOptions(),
                    init_latent=init, keep=keep, callback=observer.step,
                    denoised=observer.on_denoised,
                    noise_multiplier=1.0 if init is None
                    else float(request.initial_noise_multiplier))
    return x.astype(np.float32)
