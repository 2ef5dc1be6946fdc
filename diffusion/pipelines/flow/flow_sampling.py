"""The WebUI's samplers on flow-matching models (FLUX, SD3), as Forge and ComfyUI apply them:
k-diffusion's algorithms over the model's shifted sigmas, with the x0 prediction
x - sigma * flow (ComfyUI's CONST model sampling). Euler on these sigmas is the flow-matching
Euler step; "Euler a" is ComfyUI's rectified-flow variant (k-diffusion's assumes
x = x0 + sigma noise); DPM++ 2M runs unchanged, as ComfyUI runs it.

Each image draws from its own seed (image k: seed + k), as the WebUI's k-diffusion samplers;
img2img starts at the schedule's tail as the WebUI cuts it (t_enc = strength x steps) from
(1 - sigma) init + sigma noise; inpainting keeps the init image's x0 outside the mask at every
step and in the result (the WebUI's latent mask).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from ...noise.image_noise import ImageNoise
from ...samplers import sample_dpmpp_2m, sample_euler, sample_euler_ancestral_rf
from ...samplers.registry import lookup
from .. import sampling

__all__ = ["FLOW_SAMPLERS", "FLOW_SCHEDULES", "flow_sigmas", "sample_flow"]

# Callable[..., ...], as the registry's `register` takes them: each sampler has the call shape
# of `Sampler` plus keyword options of its own, which the Protocol's **options cannot list.
FLOW_SAMPLERS: dict[str, Callable[..., np.ndarray]] = {
    "Euler": sample_euler, "Euler a": sample_euler_ancestral_rf, "DPM++ 2M": sample_dpmpp_2m}
"""The WebUI samplers defined for flow models here, by label."""

FLOW_SCHEDULES = ("Automatic", "Simple")
"""Schedule types: "Simple" (what Automatic means for flow models, as in Forge)."""

Flow = Callable[[np.ndarray, float], np.ndarray]  # flow(x float32, timestep 0..1000)


def flow_sigmas(steps: int, scheduler_config: dict[str, Any], mu: float | None) -> np.ndarray:
    """ComfyUI's "simple" schedule over the model's shifted sigmas (steps + 1 values, the last
    0): of the training table sigma(t / T), t = 1..T, every T/steps-th from the top. The shift
    is the scheduler config's: by picture size (`mu`; FLUX dev) or its constant `shift`.
    At steps dividing T this is diffusers' FLUX schedule."""
    total = int(scheduler_config.get("num_train_timesteps", 1000))
    stride = total / steps
    t = np.array([(total - int(x * stride)) / total for x in range(steps)], np.float64)
    if scheduler_config.get("use_dynamic_shifting"):
        if mu is None:
            raise ValueError("this model shifts its schedule by picture size: pass mu")
        shifted = math.exp(mu) / (math.exp(mu) + (1 / t - 1))
    else:
        shift = float(scheduler_config.get("shift", 1.0))
        shifted = shift * t / (1 + (shift - 1) * t)
    return np.append(shifted, 0.0)


def sample_flow(flow: Flow, sampler: str, sigmas: np.ndarray, *, seeds: list[int], rng: str,
                shape: tuple[int, ...], init_latents: np.ndarray | None = None,
                keep: np.ndarray | None = None, strength: float = 1.0,
                t_enc: int | None = None, options: dict[str, Any] | None = None,
                callback: Callable[[int, int, np.ndarray], bool | None] | None = None
                ) -> np.ndarray:
    """Final latents (B, C, h, w) float32 of `sampler` (a FLOW_SAMPLERS label) over `sigmas`
    (`flow_sigmas`). img2img: `init_latents` (B, C, h, w) and `strength`, or `t_enc` (the
    steps run are t_enc + 1, the WebUI's hires pass); inpaint: also `keep` (1, 1, h, w), 1
    where the init image stays. `options`: the sampler's (eta,
    s_noise, ...) and `eta_noise_seed_delta` (its step noise from seed + delta, the WebUI's
    ENSD). `callback(done, total, x)` after each step (False stops)."""
    if sampler not in FLOW_SAMPLERS:
        raise ValueError(f"{sampler} is not defined for flow-matching models here; choose one "
                         f"of {', '.join(FLOW_SAMPLERS)} or 'diffusers'")
    steps = len(sigmas) - 1
    # 1. img2img: the tail of the schedule (the WebUI's t_enc = strength x steps)
    if init_latents is not None:
        t_enc = int(min(strength, 0.999) * steps) if t_enc is None else t_enc
        sigmas = sigmas[steps - t_enc - 1:]
    # 2. each image's noise from its own seed; the start at sigmas[0]
    options = dict(options or {})
    noise = ImageNoise(rng, seeds, tuple(shape[1:]),  # type: ignore[arg-type]
                       eta_noise_seed_delta=int(options.pop("eta_noise_seed_delta", 0)))
    first = noise.first()
    sigma0 = float(sigmas[0])
    x = first * sigma0 if init_latents is None else (
        sigma0 * first + (1 - sigma0) * init_latents.astype(np.float64))

    # 3. the sampler on the flow's x0 prediction (inpaint: the init image's outside the
    # mask), through the WebUI samplers' one entry
    total = len(sigmas) - 1

    def step(i: int, latents: np.ndarray) -> bool | None:
        return None if callback is None else callback(i + 1, total, latents)

    info = replace(lookup(sampler), function=FLOW_SAMPLERS[sampler])
    plan = sampling.SamplingPlan(info=info, schedule_label="Simple", sigmas=sigmas,
                                 img2img=init_latents is not None)
    model = sampling.FlowDenoiser(flow, keep=keep, init_latent=init_latents)
    x = sampling.sample(plan, model, x, seeds=seeds, image_noise=noise, callback=step,
                        options=options)
    # 4. inpaint: the kept region is the init image's
    x = sampling.kept(x, model.keep, init_latents)
    return x.astype(np.float32)
