"""The WebUI's samplers on flow-matching models (FLUX, SD3), as Forge and ComfyUI apply them:
k-diffusion's algorithms over the model's shifted sigmas, with the x0 prediction
x - sigma * flow (ComfyUI's CONST model sampling; diffusion.sampling.model_sampling's
`FlowSchedule`), through the one k-diffusion pass every family runs
(diffusion.sampling.kdiffusion_pass). Euler on these sigmas is the flow-matching
Euler step; "Euler a" is ComfyUI's rectified-flow variant (k-diffusion's assumes
x = x0 + sigma noise); DPM++ 2M runs unchanged, as ComfyUI runs it.

Each image draws from its own seed (image k: seed + k), as the WebUI's k-diffusion samplers;
img2img starts at the schedule's tail as the WebUI cuts it (t_enc = strength x steps) from
(1 - sigma) init + sigma noise; inpainting keeps the init image's x0 outside the mask at every
step and in the result (the WebUI's latent mask).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from ...sampling.kdiffusion import FlowDenoiser, SamplerOptions, SamplingPlan, schedule_tail
from ...sampling.kdiffusion_pass import WebUISeeds, sample_pass
from ...sampling.model_sampling import FlowSchedule
from ...sampling.samplers import sample_dpmpp_2m, sample_euler, sample_euler_ancestral_rf
from ...sampling.samplers.registry import SamplerInfo, lookup

__all__ = ["FLOW_SAMPLERS", "FLOW_SCHEDULES", "flow_plan", "flow_seeds", "sample_flow"]

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
    """`sampler` (a FLOW_SAMPLERS label) over the "Simple" schedule of `steps` steps of the
    model's shifted sigmas (`schedule.get_sigmas`); img2img: its tail by `strength` or
    `t_enc`, as the WebUI cuts it."""
    if sampler not in FLOW_SAMPLERS:
        raise ValueError(f"{sampler} is not defined for flow-matching models here; choose one "
                         f"of {', '.join(FLOW_SAMPLERS)} or 'diffusers'")
    info = replace(lookup(sampler), function=FLOW_SAMPLERS[sampler])
    sigmas = schedule_tail(schedule.get_sigmas(steps), steps, strength=strength, t_enc=t_enc)
    return SamplingPlan(info=info, schedule_label="Simple", sigmas=sigmas,
                        img2img=strength is not None or t_enc is not None)


def flow_seeds(seeds: list[int], info: SamplerInfo, eta_noise_seed_delta: int) -> WebUISeeds:
    """The batch's seeds (image k: seed + k; no variation seeds), with the eta noise seed delta
    only where `info`'s sampler depends on it."""
    return WebUISeeds(list(seeds), [], 0.0,
                      int(eta_noise_seed_delta) if info.uses_ensd else 0)


def sample_flow(flow: Flow, sampler: str, schedule: FlowSchedule, steps: int, *,
                seeds: list[int], rng: str, shape: tuple[int, ...],
                init_latents: np.ndarray | None = None, keep: np.ndarray | None = None,
                strength: float = 1.0, t_enc: int | None = None,
                options: SamplerOptions | None = None, eta_noise_seed_delta: int = 0,
                callback: Callable[[int, int, np.ndarray], bool | None] | None = None,
                denoised: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
    """Final latents (B, C, h, w) float32 of `sampler` (a FLOW_SAMPLERS label) over `steps`
    steps of `schedule`. img2img: `init_latents` (B, C, h, w) and `strength`, or `t_enc` (the
    steps run are t_enc + 1, the WebUI's hires pass); inpaint: also `keep` (1, 1, h, w), 1
    where the init image stays. `options`: the sampler's (eta, s_noise, ...);
    `eta_noise_seed_delta`: its step noise from seed + delta (the WebUI's ENSD).
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
    x = sample_pass(plan, schedule, model, flow_seeds(seeds, plan.info, eta_noise_seed_delta),
                    rng=rng, shape=tuple(shape[1:]),  # type: ignore[arg-type]
                    options=options or SamplerOptions(), init_latent=init_latents,
                    keep=model.keep, callback=callback, denoised=denoised)
    return x.astype(np.float32)
