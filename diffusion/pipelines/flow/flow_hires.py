"""The hires fix on the flow-matching families (FLUX.1, SD3, Chroma, Z-Image, Qwen-Image,
FLUX.2), as Forge runs it for flow models: the first pass's latents upscaled as the model
holds them (a latent upscaler; FLUX.2's patchified, normalized 1/16 latents as they are, as
ComfyUI and Forge Neo keep them), or its pictures upscaled and encoded again (an image or
model upscaler), then a second pass as img2img at the larger size with the same sampler,
prompt and CFG, FLUX dev's distilled guidance (FLUX.1's and FLUX.2's) being
`hr_distilled_cfg` (Forge's "Hires Distilled CFG Scale"), and with the VAE of Forge's
`hr_additional_modules` where they hold one (`request.hires_modules`: it encodes the upscaled
pictures and decodes the result). As in the WebUI's hires pass the second pass's schedule is
stretched by 1 / denoise and its last `steps` run (`steps` 0: the first pass's), over the
shifted sigmas of the new size (FLUX dev's shift grows with the picture; FLUX.2's with the
stretched schedule's step count too), from each image's seed drawn afresh at that size. The
size is rounded down to whole 2x2 latent patches (16 pixels).

On the edit models that take it (FLUX.1 Kontext, Qwen-Image-Edit, FLUX.2, Qwen-Image 2.1:
Capabilities.hires_with_references) the init image is a reference beside the noise, not the
start: the second pass's request keeps it and the further `references`, so the model's guided
flow reads the same reference pictures as in the first pass.

ControlNet units guide the passes as the ControlNet extension's do on the SD families
(diffusion.pipelines.control): each pass takes the units its `hr_option` names
(`stage_control`), the second its maps fitted to the hires size by their resize modes and
its guidance start / end counted in its own steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any, Protocol

import numpy as np

from ...imaging import to_unit_image
from ...models.step_cache import StepCache
from ...noise.rng import make_generator
from ...sampling.kdiffusion_pass import WebUISeeds
from ...sampling.model_sampling import FlowSchedule
from ...text.prompts import extract_extra_networks
from ...upscalers.interpolation import crop_latents, upscale_image, upscale_latents
from ..control import HR_OPTIONS
from ..hires_pass import hires_prompts
from ..observer import Observer
from ..request import GenerationRequest
from .flow_sampling import sample_flow
from .flow_schedule import scheduled_flow
from .start import encode_image

__all__ = ["FlowPasses", "hires_size", "run_hires", "stage_control"]

Flow = Callable[[np.ndarray, float], np.ndarray]


class FlowPasses(Protocol):
    """What the hires pass needs of a flow model (a FlowModel): its VAE and its scale, how
    many pixels a side of one of its latents covers (`latent_scale`: the VAE's factor, twice
    it for FLUX.2's patchified latents), its schedule, its guided flow for a request at a
    size, its pictures of latents and its VAE's posterior draw of pictures (each family's
    own VAE), and its placement (a model upscaler runs on its device: a server worker's)."""

    @property
    def vae(self) -> Any: ...

    @property
    def vae_scale_factor(self) -> int: ...

    @property
    def latent_scale(self) -> int: ...

    def schedule(self, shape: tuple[int, ...], steps: int, mu: float | None
                 ) -> FlowSchedule: ...

    def guided_flow(self, request: GenerationRequest, prompts: list[str], width: int,
                    height: int, cache: StepCache | None = None
                    ) -> tuple[Flow, tuple[int, ...], float | None]: ...

    def decode(self, latents: np.ndarray, request: GenerationRequest) -> list[np.ndarray]: ...

    def encode_init(self, pixels: np.ndarray, generator: Any) -> np.ndarray: ...

    @property
    def placement(self) -> Any: ...  # a contract.Placement: the model upscaler runs there


def hires_size(model: FlowPasses, request: GenerationRequest, width: int, height: int
               ) -> tuple[int, int]:
    """The second pass's (width, height): the hires target in whole 2x2 latent patches."""
    multiple = 2 * model.vae_scale_factor
    w, h = request.hires.target(width, height)  # type: ignore[union-attr]
    if w < multiple or h < multiple:
        raise ValueError(f"the hires size {w}x{h} is smaller than one latent patch "
                         f"({multiple} pixels)")
    return w // multiple * multiple, h // multiple * multiple


def stage_control(control: tuple[Any, ...], stage: str) -> tuple[Any, ...]:
    """The request's control units that guide the hires fix's `stage` ("first" or "second"
    pass) by their hr_option: "Low res only" ones not the second, "High res only" ones not
    the first (control.Control's rule for the SD families)."""
    skip = {"first": HR_OPTIONS[2], "second": HR_OPTIONS[1]}[stage]
    return tuple(unit for unit in control if getattr(unit, "hr_option", None) != skip)


def run_hires(model: FlowPasses, request: GenerationRequest, prompts: list[str],
              seeds: WebUISeeds, latents: np.ndarray, width: int, height: int,
              observer: Observer, *, cache: StepCache | None = None) -> np.ndarray:
    """The final latents of the hires pass that follows the first pass's `latents` (made at
    width x height from `prompts`, tags removed) of `model`, with the request's hires sampler
    (`hires_sampler_label`: the first pass's unless the hires fix names its own); `cache`:
    the generation's step cache (the second pass's flows take branches of their own)."""
    hires = request.hires
    assert hires is not None
    w, h = hires_size(model, request, width, height)
    scale = model.latent_scale
    second_vae = getattr(request.hires_modules, "vae", None)  # else the model's encodes
    # 1. where the second pass starts: enlarged to cover the target, cropped to it
    big_w, big_h = hires.cover(width, height)  # >= the target, >= (w, h) its multiple
    if hires.is_latent:
        start = upscale_latents(latents, (big_h // scale, big_w // scale), hires.upscaler)
    else:
        # the first pass's VAE decodes (the model's), the hires modules' encodes
        pictures = model.decode(latents, replace(request, hires_modules=None))
        encode = model.encode_init if second_vae is None else partial(encode_image, second_vae)
        generator = make_generator(request.rng, seeds.seeds[0])  # the VAE posterior's draws
        start = np.concatenate([
            encode(_unit_picture(upscale_image(p, (big_w, big_h), hires.upscaler,
                                               model.placement.device), scale), generator)
            for p in pictures])
    start = crop_latents(start, (h // scale, w // scale))
    # 2. the stretched schedule at the new size, its last `steps` from the upscaled latents,
    # FLUX dev guided by the hires pass's own distilled CFG (Forge's hr_distilled_cfg)
    # its units those for the second pass, counting its own steps
    # and its own prompts and sampler where the hires fix names them (the WebUI's hr_prompt,
    # hr_negative_prompt, hr_sampler_name)
    steps, total = hires.schedule_steps(int(request.steps))
    prompt, negative_prompt = hires_prompts(hires, request.prompt, request.negative_prompt)
    second = replace(request, distilled_cfg_scale=request.hr_distilled_cfg, steps=steps,
                     control=stage_control(request.control or (), "second"), prompt=prompt,
                     negative_prompt=negative_prompt)
    if prompt != request.prompt:
        prompts = [extract_extra_networks(prompt)[0]] * len(prompts)
    label = request.hires_sampler_label[0]
    # prompt editing counts on from the first pass (the WebUI's hires_steps)
    flow, shape, mu = scheduled_flow(model, second, prompts, w, h, cache,
                                     steps=int(request.steps), hires_steps=steps)
    return sample_flow(flow, label, model.schedule(shape, total, mu), total,
                       seeds=seeds, rng=request.rng, shape=shape,
                       init_latents=start.astype(np.float32), t_enc=steps - 1,
                       options=request.sampler_options, first_pass=False,
                       callback=observer.step, denoised=observer.on_denoised)


def _unit_picture(picture: np.ndarray, scale: int) -> np.ndarray:
    """An upscaled (H, W, 3) uint8 picture as the VAE encodes it, (1, 3, H', W') in [-1, 1]:
    cropped around the centre, as crop_latents crops latents, to whole latents of `scale`
    pixels a side (FLUX.2's 16: its 2x2 patches of the VAE's latents whole). The cover's
    sides are multiples of 8, so at the VAE's own scale the picture stays as it is."""
    height, width = picture.shape[0] // scale * scale, picture.shape[1] // scale * scale
    top, left = (picture.shape[0] - height) // 2, (picture.shape[1] - width) // 2
    return to_unit_image(picture[top:top + height, left:left + width], width, height)
