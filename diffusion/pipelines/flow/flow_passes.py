"""`FlowModelPasses`: the passes a FlowModel denoises with (its base, as `MemoryModes` is),
which the family models built on it override piece by piece:

- "diffusers": the pipeline's own loop (`_diffusers`: FluxPipeline / StableDiffusion3Pipeline
  and their Img2Img / Inpaint forms, the batch's noise from one seed);
- a WebUI sampler: `_webui` samples `guided_flow` (the pipeline's velocity, true CFG where
  the family asks for it) over the shifted "Simple" schedule with per-image seeds
  (diffusion.pipelines.flow.flow_sampling), img2img from `encode_init`'s latents;
- `_guidance`: the guidance keywords both pass to the pipeline (FLUX's distilled scale, SD3's
  and Chroma's CFG, the ControlNet units).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ...imaging import latent_mask, rgb_picture, to_unit_image
from ...models.step_cache import StepCache
from ...noise.rng import make_generator
from ...preprocessors.resize import fit_map
from ...sampling.guidance import combine
from ...sampling.kdiffusion import DIFFUSERS
from ...sampling.kdiffusion_pass import WebUISeeds
from ...sampling.model_sampling import FlowSchedule
from ...upscalers.interpolation import upscale_latents
from ..control_map import split_maps
from ..masked_content import latent_content
from ..observer import Observer
from ..request import GenerationRequest
from .flow_control import FlowControl, encode_map
from .flow_sampling import resized, sample_flow
from .flow_schedule import scheduled_flow
from .start import encode_image

__all__ = ["CFG_FAMILIES", "FlowModelPasses"]

# the families whose pipelines take the CFG scale and negative prompt themselves (true CFG)
CFG_FAMILIES = ("sd3", "chroma")


class FlowModelPasses:
    """The denoising passes of a FlowModel over its `pipe` (a FLUX.1, SD3/3.5 or Chroma
    pipeline of `family`), for its `denoise` (not sampling.kdiffusion's `FlowDenoiser`, which
    the WebUI samplers' pass wraps around `guided_flow`)."""

    pipe: Any
    family: str
    # T5 tokens per prompt; None: the pipeline's (diffusers': FLUX 512, SD3 256)
    max_sequence_length: int | None = None

    def schedule(self, shape: tuple[int, ...], steps: int, mu: float | None) -> FlowSchedule:
        """The sigmas of a run of `steps` over latents of `shape` (the WebUI samplers' pass,
        the hires pass's stretched schedule), `mu` the one its guided flow gave (of the size
        alone here)."""
        return FlowSchedule(self.pipe.scheduler_config, mu=mu)

    def _length_and_control(self, request: GenerationRequest) -> dict[str, Any]:
        """The pipeline's keywords for the prompt's length where set and the request's
        ControlNet units (a FlowControl of its own for each call: the "diffusers" sampler
        counts guidance start/end as diffusers does), for the families' `_guidance`
        to pass on."""
        extra: dict[str, Any] = ({} if self.max_sequence_length is None
                                 else {"max_sequence_length": self.max_sequence_length})
        units = split_maps(request.control or ())[1]
        if units:
            extra["control"] = FlowControl(
                units, total_steps=int(request.steps), family=self.family,
                rule="diffusers" if request.sampler_label[0] == DIFFUSERS else "unit")
        return extra

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """The pipeline's guidance keywords (FLUX's distilled scale, SD3's CFG), the T5
        length where set, and the request's ControlNet units (`_length_and_control`)."""
        extra = self._length_and_control(request)
        if self.family in CFG_FAMILIES:
            return {"guidance_scale": float(request.cfg_scale),
                    "negative_prompt": request.negative_prompt, **extra}
        return {"guidance_scale": float(request.distilled_cfg_scale), **extra}

    def _diffusers(self, request: GenerationRequest, prompts: list[str], seed: int,
                   width: int, height: int, observer: Observer,
                   cache: StepCache | None) -> np.ndarray:
        if self.family not in CFG_FAMILIES and request.cfg_scale != 1:
            raise ValueError("FLUX with the 'diffusers' sampler runs without CFG (its guidance "
                             "is distilled_cfg_scale): set cfg_scale 1, or pick a WebUI sampler "
                             "for true CFG")
        images = {} if request.init_image is None else {
            "image": request.init_image, "mask_image": request.mask,
            "strength": float(request.strength)}
        found = split_maps(request.control or ())[0]
        if found is not None:  # Flux Tools' map, drawn from the seed's generator as diffusers
            images["control_image"] = fit_map(found.image, width, height, found.resize_mode)
        return self.pipe(prompts, height=height, width=width,
                         num_inference_steps=int(request.steps), seed=seed, rng=request.rng,
                         callback=observer.step, output_type="latent",
                         **_cached(cache), **self._guidance(request), **images)

    def guided_flow(self, request: GenerationRequest, prompts: list[str], width: int,
                    height: int, cache: StepCache | None = None
                    ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...],
                               float | None]:
        """The guided flow of `prompts` at width x height, its latents' shape and the
        schedule's mu; FLUX with CFG above 1: the negative prompt's flow combined in (true
        CFG, guidance.combine), SD3's CFG inside its velocity. `cache`: the generation's step
        cache (each prompt's flow a branch of it)."""
        size: dict[str, Any] = {"height": height, "width": width, **_cached(cache)}
        found = split_maps(request.control or ())[0]
        if found is not None:  # Flux Tools' map: the posterior's mean, as the units' maps
            size["control_latents"] = encode_map(self.pipe.vae, found.image, batch=len(prompts),
                                                 width=width, height=height,
                                                 resize_mode=found.resize_mode)
        if self.family in CFG_FAMILIES:
            return self.pipe.velocity(prompts, **size, **self._guidance(request))
        return self.true_cfg(request, prompts, **size)

    def true_cfg(self, request: GenerationRequest, prompts: list[str], **settings: Any
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...],
                            float | None]:
        """The pipeline's velocity of `prompts` with `settings` and `_guidance`'s keywords
        (fresh for each pass: a ControlNet unit's FlowControl counts its own pass's calls),
        its latents' shape and mu; at a CFG scale above 1 the negative prompt's velocity
        with the same settings combined in (true CFG, guidance.combine), as Forge runs FLUX
        and its Fill and Kontext models."""
        flow, shape, mu = self.pipe.velocity(prompts, **settings, **self._guidance(request))
        cfg = float(request.cfg_scale)
        if cfg == 1:
            return flow, shape, mu
        negative, _, _ = self.negative_velocity(request, len(prompts), **settings,
                                                **self._guidance(request))

        def guided(x: np.ndarray, t: float) -> np.ndarray:
            uncond = negative(x, t)
            return combine(uncond, flow(x, t), None, np.float32(cfg))

        return guided, shape, mu

    def negative_velocity(self, request: GenerationRequest, count: int, **settings: Any
                          ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...],
                                     float | None]:
        """The pipeline's velocity for `count` negative prompts with `settings`, without FLUX
        Redux's picture tokens (they steer the prompt only, as diffusers' negative prompt
        embeds and ComfyUI's style models leave the negative side alone)."""
        if request.redux is None:
            return self.pipe.velocity([request.negative_prompt] * count, **settings)
        prior, self.pipe.prompt_prior = self.pipe.prompt_prior, None
        try:
            return self.pipe.velocity([request.negative_prompt] * count, **settings)
        finally:
            self.pipe.prompt_prior = prior

    def begin_decode(self, request: GenerationRequest, shape: tuple[int, ...]) -> None:
        """Begin the decoder's kernels for latents of `shape` (FlowModel's; nothing here)."""

    def encode_init(self, pixels: np.ndarray, generator: Any) -> np.ndarray:
        """The init image's latents (1, C, h, w) in the transformer's space for the WebUI
        samplers' img2img: a posterior draw from `generator` (`encode_image`)."""
        return encode_image(self.pipe.vae, pixels, generator)

    def webui_start(self, request: GenerationRequest, seeds: WebUISeeds,
                    shape: tuple[int, ...], width: int, height: int
                    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """A WebUI sampler's img2img start: the init image's latents (B, C, h, w) for latents
        of `shape`, and inpainting's `keep` (1, 1, h, w: 1 where the init image stays); None,
        None in txt2img."""
        init = keep = None
        if request.init_image is not None:
            # the init image's latents drawn from the VAE's posterior with the first seed;
            # resize mode 3 ("Just resize (latent upscale)"): encoded at its own size, the
            # latents resized to the pass's as the WebUI's "Latent" upscaler resizes them
            size = (width, height)
            if request.resize_mode == 3:
                size = rgb_picture(request.init_image).size
                if min(size) < self.pipe.vae_scale_factor:
                    raise ValueError(f"init image {size[0]}x{size[1]} is smaller than one "
                                     "latent pixel: resize mode 3 encodes it at its own "
                                     "size; give a larger picture or resize mode 0-2")
            generator = make_generator(request.rng, seeds.seeds[0])
            latents = self.encode_init(to_unit_image(request.init_image, *size), generator)
            if request.resize_mode == 3:
                latents = upscale_latents(latents, (shape[2], shape[3]), "Latent")
            init = np.repeat(latents, shape[0], 0)
            if request.mask is not None:  # the WebUI's latent mask, its masked content
                small = latent_mask(request.mask, (shape[2], shape[3]),
                                    rounded=request.mask_round)
                first = seeds.seeds[0] if request.latent_noise_seed is None else (
                    request.latent_noise_seed)  # the job's first batch's latent noise
                init = latent_content(init, small, request.inpainting_fill, rng=request.rng,
                                      seeds=[first + k for k in range(len(seeds.seeds))])
                keep = 1.0 - small
        return init, keep

    def _webui(self, request: GenerationRequest, label: str, prompts: list[str],
               seeds: WebUISeeds, width: int, height: int, observer: Observer,
               cache: StepCache | None) -> np.ndarray:
        flow, shape, mu = scheduled_flow(self, request, prompts, width, height, cache,
                                         steps=int(request.steps))
        self.begin_decode(request, shape)  # the prompt encoded, the first step not yet
        init, keep = self.webui_start(request, seeds, shape, width, height)
        return sample_flow(flow, label, self.schedule(shape, int(request.steps), mu),
                           int(request.steps),
                           seeds=resized(seeds, request, shape, width, height),
                           rng=request.rng, shape=shape, init_latents=init, keep=keep,
                           strength=float(request.strength), options=request.sampler_options,
                           noise_multiplier=1.0 if init is None
                           else float(request.initial_noise_multiplier),
                           callback=observer.step, denoised=observer.on_denoised)


def _cached(cache: StepCache | None) -> dict[str, Any]:
    """The pipeline's `cache` keyword where a step cache runs."""
    return {} if cache is None else {"cache": cache}
