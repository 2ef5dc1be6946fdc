"""The SD families' denoising of a request: the request resolved into a `Pass`, the sampler
it names run (the WebUI's samplers: run_kdiffusion; "diffusers" and the timestep samplers:
a diffusers scheduler in run_scheduler), and the infotext fields the family adds.

`StableDiffusion.denoise` (and SDXL's, the same method) is `denoise(model, ...)`; the model
gives its `unet_parts()`, scheduler config, refiner and embeddings, nothing else.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ...loaders.sd.vae_file import vae_hash, vae_name
from ...sampling import kdiffusion, samplers
from ...sampling.kdiffusion import DIFFUSERS
from ...sampling.kdiffusion_pass import WebUISeeds
from ...sampling.schedulers import get_scheduler, scheduler_from_config
from ...text.embeddings import ti_hashes
from ..control_spec import unit_label
from ..generation import Denoised, draw_seed
from ..observer import Observer
from ..request import GenerationRequest
from .prepare import Pass
from .run_kdiffusion import run_kdiffusion
from .run_scheduler import run_scheduler

__all__ = ["denoise", "request_pass"]


def request_pass(model: Any, request: GenerationRequest, seed: int, width: int,
                 height: int) -> Pass:
    """The request's first (or only) pass on `model` at this seed and size."""
    r = Pass(prompt=request.prompt, negative_prompt=request.negative_prompt,
             steps=int(request.steps), cfg_scale=float(request.cfg_scale), seed=seed,
             width=width, height=height,
             batch_size=int(request.batch_size), clip_skip=int(request.clip_skip),
             strength=float(request.strength), rng=request.rng, mode=request.mode,
             masked_content=request.inpainting_fill, mask_round=request.mask_round,
             latent_noise_seed=request.latent_noise_seed,
             resize_latents=request.resize_mode == 3, embeddings=model._embedding_lookup(),
             control=tuple(request.control),
             hires_stage="first" if request.hires is not None else None,
             hires_vae=getattr(request.hires_modules, "vae", None),
             noise_multiplier=1.0 if request.mode == "txt2img"
             else float(request.initial_noise_multiplier))
    if request.refiner is not None:
        r = replace(r, refiner=request.refiner, switch_at=float(request.refiner_switch_at),
                    hires_refiner_pass=request.hires_refiner_pass)
    return r


def denoise(model: Any, request: GenerationRequest, seed: int, width: int, height: int,
            observer: Observer) -> Denoised:
    """The request's latents on `model` (a StableDiffusion), their seeds and the family's
    infotext fields."""
    r = request_pass(model, request, seed, width, height)
    # 1. the sampler: diffusers' scheduler for "diffusers" and the timestep samplers
    label, schedule = request.sampler_label
    scheduler = None
    if label == DIFFUSERS:
        scheduler = scheduler_from_config(model.scheduler_config)
    elif (info := samplers.lookup(label)).kind == "timestep":
        # DDIM CFG++ is DDIM with another step (run_scheduler.denoise)
        scheduler = get_scheduler("DDIM" if label == "DDIM CFG++" else label,
                                  model.scheduler_config)
        r = replace(r, cfg_pp=info.needs_uncond)
    # 2. denoising
    fields: dict[str, Any] = {"clip_skip": r.clip_skip}
    parts = model.unet_parts()
    if scheduler is not None:
        latents = run_scheduler(parts, r, scheduler, request.init_image, request.mask,
                                observer, webui=label != DIFFUSERS, hires=request.hires)
        seeds = [seed] * r.batch_size
    else:
        resize = None
        if request.seed_resize_from is not None:
            f = model.vae_scale_factor
            resize = (request.seed_resize_from[1] // f, request.seed_resize_from[0] // f)
        image_seeds = WebUISeeds.webui(seed, r.batch_size, draw_seed(request.subseed),
                                       request.subseed_strength,
                                       request.eta_noise_seed_delta, resize)
        assert schedule is not None  # sampler_label has none only for "diffusers", above
        latents, extra = run_kdiffusion(
            parts, r, label, schedule, request.init_image, request.mask, observer,
            seeds=image_seeds, hires=request.hires,
            hires_sampler=request.hires_sampler_label,
            options=request.sampler_options or kdiffusion.SamplerOptions())
        if request.seed_resize_from is not None:
            extra["seed_resize_from"] = tuple(request.seed_resize_from)
        schedule, seeds = extra.pop("schedule"), image_seeds.seeds
        fields.update(extra)
    # 3. this family's infotext fields
    fields["scheduler"] = schedule
    if r.refiner is not None:
        fields.update(refiner=r.refiner.name, refiner_switch_at=r.switch_at)
        if request.hires is not None and r.hires_refiner_pass != "second pass":
            fields["hires_refiner_pass"] = r.hires_refiner_pass  # the WebUI's, where not default
    if request.control:  # the extension's "ControlNet N" infotext fields
        fields["controlnet"] = [unit_label(unit) for unit in request.control]
    if model.vae_path is not None:
        fields.update(vae_hash=vae_hash(model.vae_path), vae=vae_name(model.vae_path))
    if r.embeddings is not None and r.embeddings.used:
        # the prompt's names, then the negative prompt's, as the WebUI writes them
        fields["ti_hashes"] = ti_hashes(r.embeddings.used.values())
    return Denoised(latents, seeds, fields)
