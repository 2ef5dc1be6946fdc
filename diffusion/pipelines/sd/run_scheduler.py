"""The diffusers pipelines' denoising, around a diffusers-style scheduler: `sampler="diffusers"`
(the model folder's own scheduler, as diffusers runs it) and the WebUI's timestep samplers
(DDIM, DDIM CFG++, PLMS, UniPC). A whole batch draws from the one seed, as in diffusers.

Random draws come in diffusers' order (image latents, noise, masked-image latents), so the same
draws reproduce its pipelines exactly.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ...noise.rng import make_generator
from ...sampling.guidance import combine
from ...sampling.scheduler_loop import scheduler_loop
from ...sampling.schedulers import scheduler_from_config
from ...upscalers.interpolation import HiresFix
from ..observer import Observer
from .guided_unet import GuidedUNet
from .prepare import InpaintInputs, Pass, hires_latents
from .refiner import cutoff
from .unet_model import Generator, UNetParts

__all__ = ["denoise", "run_scheduler"]


def run_scheduler(pipe: UNetParts, r: Pass, scheduler: Any, init_image: Any, mask: Any,
                  observer: Observer, *, webui: bool,
                  hires: HiresFix | None = None) -> np.ndarray:
    """The final latents of `r` with `scheduler`. `webui`: the prompt is read as the WebUI
    reads it (else as diffusers does). `hires`: then a second pass, img2img from the upscaled
    result, running the hires steps of a schedule stretched by 1 / strength (as the WebUI's
    hires pass)."""
    # 1. a refiner with "diffusers": diffusers' denoising_end, then denoising_start
    if r.refiner is not None and not webui:
        generator = make_generator(r.rng, r.seed)
        latents = scheduler_pass(pipe, r, scheduler, init_image, mask, observer, webui=False,
                                 generator=generator, end_at=r.switch_at)
        other = replace(r, refiner=None, mode="img2img")
        refiner = r.refiner.unet_parts()
        return scheduler_pass(refiner, other, scheduler_from_config(
            refiner.scheduler_config), None, None, observer, webui=False,
            image_latents=latents, generator=generator, start_at=r.switch_at)
    # 2. the pass
    latents = scheduler_pass(pipe, r, scheduler, init_image, mask, observer, webui=webui)
    if hires is None:
        return latents
    # 3. the hires pass: img2img from the upscaled latents over a stretched schedule
    start, r = hires_latents(pipe, r, latents, hires)
    r = replace(r, steps=hires.schedule_steps(r.steps)[1], first_pass_steps=r.steps)
    again = type(scheduler).from_config(scheduler.config)
    return scheduler_pass(pipe, r, again, None, None, observer, webui=webui,
                          image_latents=start)


def scheduler_pass(pipe: UNetParts, r: Pass, scheduler: Any, init_image: Any, mask: Any,
                   observer: Observer, *, webui: bool, image_latents: np.ndarray | None = None,
                   generator: Generator | None = None, end_at: float | None = None,
                   start_at: float | None = None) -> np.ndarray:
    """One pass from noise, from `init_image` (or its latents `image_latents`) + noise, or
    inpainting `init_image` where `mask` is white. `end_at` / `start_at`: diffusers'
    `denoising_end` / `denoising_start` (the second continues `image_latents` as they are)."""
    # 1. timesteps and conditioning
    generator = generator or make_generator(r.rng, r.seed)
    scheduler.set_timesteps(r.steps)
    timesteps = np.asarray(scheduler.timesteps)
    unet = pipe.guided(r, r.steps, webui=webui)
    if start_at is not None:
        count = int((timesteps < cutoff(scheduler, start_at)).sum())
        if scheduler.order == 2 and count % 2 == 0:
            count += 1
        begin = len(timesteps) - count
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        assert image_latents is not None  # the second pass (start_at) continues given latents
        return denoise(image_latents, unet, timesteps[begin:], scheduler, r.cfg_scale,
                       generator, observer)
    # 2. img2img / inpaint: the schedule's tail, from the strength
    inputs = InpaintInputs(pipe, r, init_image, mask,
                           inpainting_model=pipe.is_inpainting_model)
    inpaint9 = r.mode == "inpaint" and pipe.is_inpainting_model
    if r.mode != "txt2img":
        start = r.steps - min(int(r.steps * r.strength), r.steps)
        timesteps = timesteps[start * scheduler.order:]
        if len(timesteps) == 0:
            raise ValueError(f"strength {r.strength} with {r.steps} steps leaves no step to "
                             "run; raise strength or steps")
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start * scheduler.order)
    # 3. the starting latents: the image's, then the noise (the WebUI's samplers keep the
    # image's latents outside the mask with every UNet, diffusers' only with the ordinary one)
    blend = r.mode == "inpaint" and (webui or not inpaint9)
    if image_latents is None and (r.mode == "img2img" or (
            r.mode == "inpaint" and (blend or r.strength < 1.0))):
        image_latents = inputs.image_latents(generator)
    scale = pipe.vae_scale_factor
    shape = (r.batch_size, pipe.latent_channels, r.height // scale, r.width // scale)
    noise = generator.standard_normal(shape)
    # the WebUI's initial_noise_multiplier (img2img, inpaint) scales the start's noise only
    scaled = noise if r.noise_multiplier == 1.0 else noise * r.noise_multiplier
    if r.mode == "txt2img" or (r.mode == "inpaint" and r.strength == 1.0):
        latents = scaled * scheduler.init_noise_sigma
    else:  # inpaint: latent noise / nothing in the start only (the blend keeps the image's)
        assert image_latents is not None  # img2img, or inpaint below strength 1: encoded above
        start_latents = inputs.start(image_latents, [r.seed] * r.batch_size)
        latents = scheduler.add_noise(start_latents, scaled, timesteps[:1])
    # 4. inpaint: the 9-channel UNet's inputs; the known region put back after each step
    extra = after_step = None
    if inpaint9:
        extra = inputs.nine_channel(generator)
    if blend:
        small = inputs.small_mask()

        def after_step(i: int, x: np.ndarray) -> np.ndarray:
            # keep the unmasked region on the image's own noising trajectory
            known = image_latents
            if i + 1 < len(timesteps):
                known = scheduler.add_noise(image_latents, noise, timesteps[i + 1:i + 2])
            return (1 - small) * known + small * x
    if end_at is not None:
        timesteps = timesteps[timesteps >= cutoff(scheduler, end_at)]
    # 5. the denoising loop
    return denoise(latents, unet, timesteps, scheduler, r.cfg_scale, generator, observer,
                   extra=extra, after_step=after_step, cfg_pp=r.cfg_pp)


def denoise(latents: np.ndarray, unet: GuidedUNet, timesteps: np.ndarray,
            scheduler: Any, cfg_scale: float, generator: Generator, observer: Observer, *,
            extra: np.ndarray | None = None, after_step: Any = None,
            cfg_pp: bool = False) -> np.ndarray:
    """The diffusers pipelines' loop: guidance on the UNet's outputs, then the scheduler's
    step; step i uses the conditioning of WebUI step i (prompt editing), with the WebUI's
    samplers the AND parts' guidance on the noise (`guidance.combine`). `cfg_pp`: the
    WebUI's DDIM CFG++ (guidance scale / 12.5 for x0, the unconditional noise for the
    direction). `after_step(i, latents)` -> latents: inpainting's blend."""
    def predict(model_in: np.ndarray, t: Any, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        if extra is not None:
            model_in = np.concatenate([model_in, extra], axis=1)
        uncond, out = unet(model_in, float(t), i)
        if cfg_pp:  # x0 from guidance at scale / 12.5, the way back from the uncond noise
            guided = out if uncond is None else combine(uncond, out, unet.weights,
                                                        cfg_scale / 12.5)
            return guided, out if uncond is None else uncond
        if uncond is not None:
            out = combine(uncond, out, unet.weights, cfg_scale)
        return out, None

    return scheduler_loop(latents, timesteps, scheduler, predict, generator=generator,
                          after_step=after_step, callback=observer.step,
                          denoised=observer.on_denoised)
