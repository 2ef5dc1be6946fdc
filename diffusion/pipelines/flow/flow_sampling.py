"""The WebUI's samplers on flow-matching models (FLUX, SD3), as Forge and ComfyUI apply them:
k-diffusion's algorithms over the model's shifted sigmas, with the x0 prediction
x - sigma * flow (ComfyUI's CONST model sampling; diffusion.sampling.model_sampling's
`FlowSchedule`), through the one k-diffusion pass every family runs
(diffusion.sampling.kdiffusion_pass). Euler on these sigmas is the flow-matching
Euler step; "Euler a" is ComfyUI's rectified-flow variant (k-diffusion's assumes
x = x0 + sigma noise); DPM++ 2M runs unchanged, as ComfyUI runs it.

Each image draws from its own seed (image k: seed + k), as the WebUI's k-diffusion samplers,
blended with a variation seed's noise and drawn at another size ("Seed resize from") as the
WebUI and Forge do for these models;
img2img starts at the schedule's tail as the WebUI cuts it (t_enc = strength x steps) from
(1 - sigma) init + sigma noise; inpainting keeps the init image's x0 outside the mask at every
step and in the result (the WebUI's latent mask).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from ...sampling.kdiffusion import FlowDenoiser, SamplerOptions, SamplingPlan, schedule_tail
from ...sampling.kdiffusion_pass import WebUISeeds, sample_pass
from ...sampling.model_sampling import FlowSchedule
from ...sampling.samplers import sample_dpmpp_2m, sample_euler, sample_euler_ancestral_rf
from ...sampling.samplers.registry import lookup
from ..generation import draw_seed

__all__ = ["FLOW_SAMPLERS", "FLOW_SCHEDULES", "flow_plan", "flow_seeds", "resized",
           "sample_flow"]

# Callable[..., ...], as the registry's `register` takes them: each sampler has the call shape
# of `Sampler` plus keyword options of its own, which the Protocol's **options cannot list.
FLOW_SAMPLERS: dict[str, Callable[..., np.ndarray]] = {
    "Euler": sample_euler, "Euler a": sample_euler_ancestral_rf, "DPM++ 2M": sample_dpmpp_2m}
"""The WebUI samplers defined for flow models here, by label."""

FLOW_SCHEDULES = ("Automatic", "Simple")
"""Schedule types: "Simple" (what Automatic means for flow models, as in Forge)."""

Flow = Callable[[np.ndarray, float], np.ndarray]  # flow(x float32, timestep 0..1000)


def flow_plan(sampler: str, steps: int, schedule: FlowSchedule, *,
              strength: float | None = None, t_enc: int | None = None) -> SamplingPlan:
    """`sampler` (a FLOW_SAMPLERS label) over `steps` of the model's schedule
    (`schedule.get_sigmas`: the "Simple" one of its shifted sigmas, or the family's own);
    img2img: its tail by `strength` or `t_enc`, as the WebUI cuts it."""
    if sampler not in FLOW_SAMPLERS:
        raise ValueError(f"{sampler} is not defined for flow-matching models here; choose one "
                         f"of {', '.join(FLOW_SAMPLERS)} or 'diffusers'")
    info = replace(lookup(sampler), function=FLOW_SAMPLERS[sampler])
    sigmas = schedule_tail(schedule.get_sigmas(steps), steps, strength=strength, t_enc=t_enc)
    return SamplingPlan(info=info, schedule_label=schedule.label, sigmas=sigmas,
                        img2img=strength is not None or t_enc is not None)


def flow_seeds(request: Any, seed: int, batch: int) -> WebUISeeds:
    """The batch's seeds as the WebUI gives them: image k from seed + k, or with a variation
    seed (`subseed_strength` over 0) every image from `seed` blended with subseed + k's noise;
    the eta noise seed delta. "Seed resize from" needs the latents' shape: `resized`."""
    return WebUISeeds.webui(seed, batch, draw_seed(request.subseed),
                            float(request.subseed_strength),
                            int(request.eta_noise_seed_delta))


def resized(seeds: WebUISeeds, request: Any, shape: tuple[int, ...], width: int,
            height: int) -> WebUISeeds:
    """`seeds` with the request's "Seed resize from" (a width x height in pixels) in the
    units of latents `shape` (B, C, h, w) made for width x height: the WebUI's noise drawn at
    that size and centred, which keeps a seed's composition at another size."""
    if request.seed_resize_from is None:
        return seeds
    w0, h0 = request.seed_resize_from
    return replace(seeds, resize_from=(max(1, int(h0) * shape[2] // height),
                                       max(1, int(w0) * shape[3] // width)))


def sample_flow(flow: Flow, sampler: str, schedule: FlowSchedule, steps: int, *,
                seeds: WebUISeeds, rng: str, shape: tuple[int, ...],
                init_latents: np.ndarray | None = None, keep: np.ndarray | None = None,
                strength: float = 1.0, t_enc: int | None = None,
                options: SamplerOptions | None = None, first_pass: bool = True,
                noise_multiplier: float = 1.0,
                callback: Callable[[int, int, np.ndarray], bool | None] | None = None,
                denoised: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
    """Final latents (B, C, h, w) float32 of `sampler` (a FLOW_SAMPLERS label) over `steps`
    steps of `schedule`, each image's noise from `seeds` (flow_seeds: variation seeds, seed
    resize, the eta noise seed delta where the sampler draws step noise). img2img:
    `init_latents` (B, C, h, w) and `strength`, or `t_enc` (the steps run are t_enc + 1, the
    WebUI's hires pass, whose `first_pass` is False: no seed resize); inpaint: also `keep`
    (1, 1, h, w), 1 where the init image stays; `noise_multiplier`: the start's noise times
    this (img2img's initial_noise_multiplier). `options`: the sampler's (eta, s_noise, ...).
    `callback(done, total, x)` after each step (False stops); `denoised(x0)` after each model
    call, with its prediction (the live previews')."""
    # 1. the sigmas (img2img: the tail of the schedule, the WebUI's t_enc = strength x steps)
    img2img = init_latents is not None
    plan = flow_plan(sampler, steps, schedule,
                     strength=strength if img2img and t_enc is None else None,
                     t_enc=t_enc if img2img else None)
    # 2. the one k-diffusion pass on the flow's x0 prediction (inpaint: the init image's
    # outside the mask)
    model = FlowDenoiser(flow, schedule, keep=keep, init_latent=init_latents)
    if not plan.info.uses_ensd:
        seeds = replace(seeds, eta_noise_seed_delta=0)
    x = sample_pass(plan, schedule, model, seeds,
                    rng=rng, shape=tuple(shape[1:]),  # type: ignore[arg-type]
                    options=options or SamplerOptions(), init_latent=init_latents,
                    keep=model.keep, callback=callback, denoised=denoised,
                    first_pass=first_pass, noise_multiplier=noise_multiplier)
    return x.astype(np.float32)
