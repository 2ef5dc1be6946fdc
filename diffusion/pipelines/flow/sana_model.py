"""`SanaModel`: NVIDIA's Sana (1.0, 1.5) and Sana Sprint behind the `generate(request)` every
door calls, the flow family's `FlowModel` with Sana's guidance, and the registry's loader,
defaults and capabilities for them.

Sana: the "diffusers" sampler (its default) runs SanaPipeline's own DPM-Solver++ on flow
sigmas, the request's CFG scale being diffusers' `guidance_scale` (1 or below: the prompt's
pass alone); the WebUI's samplers for flow models run over the Simple schedule shifted by the
folder's `flow_shift`, from noise or an init image (img2img, inpainting, the hires fix).
Sana Sprint: its own SCM steps alone ("diffusers", 2 by default), txt2img and img2img (no
mask), its guidance embedded: --distilled-cfg-scale (the card's 4.5), CFG 1. txt2img without
the hires fix (and Sprint's img2img) is drawn at the model's aspect-ratio bin nearest the size
asked and resized back, as diffusers does by default (the request's use_resolution_binning;
sana_bins).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gpustd import asarray

from ...loaders.flow.text_encoder_file import module_stem
from ...loaders.sana.folder import sana_family
from ...models.step_cache import StepCache
from ...sampling.kdiffusion import DIFFUSERS
from ...text.composable import refuse_composable
from ...text.prompts import extract_extra_networks
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..finite import check_encoded, pictures_uint8
from ..generation import Denoised
from ..observer import Observer
from ..request import GenerationRequest
from .flow_memory import MemoryLayout
from .flow_model import LLMFlowModel
from .flow_sampling import FLOW_SAMPLERS, FLOW_SCHEDULES
from .sana_bins import binned_size
from .start import base_folder

__all__ = ["SANA_DEFAULTS", "SPRINT_DEFAULTS", "SanaModel", "load_sana_model",
           "sana_capabilities", "sana_defaults"]

# SanaPipeline's defaults: its own scheduler, 20 steps at guidance 4.5
SANA_DEFAULTS = SamplingDefaults(steps=20, sampler=DIFFUSERS, cfg_scale=4.5,
                                 why="SanaPipeline's settings (its DPM-Solver++ on flow sigmas)")
# SanaSprintPipeline's: 2 steps, the guidance embedded (--distilled-cfg-scale), CFG 1
SPRINT_DEFAULTS = SamplingDefaults(
    steps=2, sampler=DIFFUSERS, cfg_scale=1.0,
    why="SanaSprintPipeline's settings; its guidance is --distilled-cfg-scale (the card: 4.5)")


class SanaModel(LLMFlowModel):
    """A loaded Sana or Sana Sprint pipeline (`family` "sana" or "sana-sprint", a
    `SanaPipeline` as `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """Sana: the WebUI samplers for flow models over the Simple schedule, CFG with a
        negative prompt, img2img and inpainting with them, the hires fix, the memory modes;
        Sprint: its own sampler alone, txt2img and img2img, the memory modes. Neither takes
        ControlNets, a step cache, a refiner or the WebUI's prompt syntax."""
        return sana_capabilities(self.family)

    @property
    def native_size(self) -> int:
        """The side the transformer was trained at: its sample_size latents (1024 pixels for
        the 1024px models)."""
        return int(self.pipe.default_size)

    @property
    def distilled(self) -> bool:
        """Whether the model embeds its guidance (Sana Sprint)."""
        return bool(self.pipe.sprint)

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: Gemma 2 (its `hidden_states_of`), the transformer's
        blocks, the DC-AE."""
        pipe, transformer = self.pipe, self.pipe.transformer
        return MemoryLayout(transformer=transformer, blocks=(transformer.transformer_blocks,),
                            text_encoders=(pipe.text_encoder,),
                            text_calls=((pipe.text_encoder, "hidden_states_of"),), vae=pipe.vae)

    def check(self, request: GenerationRequest, width: int, height: int) -> None:
        """Plain-text prompts (AND only with "diffusers", which reads it as a word); Sana: an
        init image with a WebUI sampler only (diffusers has no Sana img2img); Sprint: img2img
        without a mask (SanaSprintImg2ImgPipeline), CFG 1; sides multiples of 32
        (diffusers'). One line each otherwise."""
        label = request.sampler_label[0]
        if label != DIFFUSERS:
            refuse_composable(extract_extra_networks(request.prompt)[0], "Sana models")
        if self.pipe.sprint and request.mask is not None:
            raise ValueError("Sana Sprint has no inpainting (diffusers has none): leave the "
                             "mask out, for img2img")
        if request.init_image is not None and label == DIFFUSERS and not self.pipe.sprint:
            raise ValueError("Sana's own sampler ('diffusers') draws from noise only: pick a "
                             "WebUI sampler (Euler, DPM++ 2M) for img2img and inpainting")
        if self.pipe.sprint and float(request.cfg_scale) != 1.0:
            raise ValueError("Sana Sprint embeds its guidance: leave --cfg-scale at 1 and set "
                             "--distilled-cfg-scale")
        multiple = max(32, self.vae_scale_factor * int(
            self.pipe.transformer.config.get("patch_size", 1)))
        for name, side in (("width", width), ("height", height)):
            if side % multiple:
                raise ValueError(f"{name} must be a multiple of {multiple} for Sana models, "
                                 f"got {side}; try {max(multiple, side // multiple * multiple)}")

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """Sana: diffusers' guidance_scale (the CFG scale) and the negative prompt; Sprint:
        the distilled CFG scale as its embedded guidance."""
        if self.pipe.sprint:
            return {"guidance_scale": float(request.distilled_cfg_scale)}
        return {"guidance_scale": float(request.cfg_scale),
                "negative_prompt": request.negative_prompt, **self._length_and_control(request)}

    def guided_flow(self, request: GenerationRequest, prompts: list[str], width: int,
                    height: int, cache: StepCache | None = None
                    ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...],
                               float | None]:
        """Sana's guided flow of `prompts` for a WebUI sampler (CFG inside)."""
        return self.pipe.velocity(  # type: ignore[no-any-return]
            prompts, height=height, width=width, cache=cache, **self._guidance(request))

    def encode_init(self, pixels: np.ndarray, generator: Any) -> np.ndarray:
        """The init image's latents (1, 32, h, w) in the transformer's space: the DC-AE's
        (deterministic: `generator` draws nothing) times its scaling factor."""
        vae = self.pipe.vae
        weight = vae.decoder.conv_in.weight
        latents = vae.encode(asarray(pixels.astype(np.float32), dtype=weight.dtype,
                                     device=weight.device)).numpy().astype(np.float32)
        check_encoded(latents, vae)
        return latents * np.float32(vae.scaling_factor)

    def binned(self, request: GenerationRequest, width: int, height: int
               ) -> tuple[int, int] | None:
        """The (width, height) a txt2img request without the hires fix (or Sprint's img2img)
        is drawn at where resolution binning moves it (diffusers' default), else None."""
        if (not request.use_resolution_binning or request.hires is not None
                or (request.init_image is not None and not self.pipe.sprint)):
            return None
        bins = binned_size(int(self.pipe.transformer.config["sample_size"]), height, width)
        return None if bins is None or bins == (height, width) else (bins[1], bins[0])

    def denoise(self, request: GenerationRequest, seed: int, width: int, height: int,
                observer: Observer) -> Denoised:
        """The flow families' denoising at the size binning gives (`binned`)."""
        width, height = self.binned(request, width, height) or (width, height)
        return super().denoise(request, seed, width, height, observer)

    def _diffusers(self, request: GenerationRequest, prompts: list[str], seed: int,
                   width: int, height: int, observer: Observer,
                   cache: StepCache | None = None) -> np.ndarray:
        """The pipeline's own loop (Sprint's img2img from the init image) at the size
        `denoise` gives, binned already where binning applies."""
        images = {} if request.init_image is None else {
            "image": request.init_image, "strength": float(request.strength)}
        return self.pipe(prompts, height=height, width=width,  # type: ignore[no-any-return]
                         num_inference_steps=int(request.steps), seed=seed, rng=request.rng,
                         callback=observer.step, output_type="latent", cache=cache,
                         use_resolution_binning=False, **self._guidance(request), **images)

    def decode(self, latents: np.ndarray, request: GenerationRequest | None = None
               ) -> list[np.ndarray]:
        """The pictures (H, W, 3) uint8 of transformer latents, by the DC-AE (in the memory
        mode's way where one is set), resized back to the size asked where `binned` moved
        it."""
        size = None
        if request is not None:
            asked = (int(request.width or self.native_size),
                     int(request.height or self.native_size))
            if self.binned(request, *asked) is not None:
                size = asked[::-1]
        return pictures_uint8(self.pipe.decode(latents, self.memory_decode(), size),
                              self.pipe.vae)


def sana_capabilities(family: str) -> Capabilities:
    """What a Sana ("sana") or Sana Sprint ("sana-sprint") model takes (SanaModel.
    capabilities says what): the loaded model's, and the registry's before the weights
    load."""
    sprint = family == "sana-sprint"
    return Capabilities(family=family, latent_space="sana",
                        guidance="distilled" if sprint else "cfg",
                        samplers=() if sprint else tuple(FLOW_SAMPLERS),
                        schedules=() if sprint else FLOW_SCHEDULES,
                        models="Sana Sprint models" if sprint else "Sana models",
                        step_cache=(), prompt_syntax=False, textual_inversion=False,
                        refiner=False, control=False, hires=not sprint,
                        hires_with_diffusers=False, latent_masked_content=False,
                        variation_seeds=not sprint, latent_upscale_resize=not sprint,
                        memory_modes=True, hires_own_settings=not sprint,
                        noise_multiplier=not sprint)


def sana_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a Sana model samples with where its defaults.json says nothing: its diffusers
    pipeline's defaults (Sprint's for "sana-sprint")."""
    return SPRINT_DEFAULTS if family == "sana-sprint" else SANA_DEFAULTS


def load_sana_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                    ) -> SanaModel:
    """A Sana or Sana Sprint diffusers folder, or a single-file transformer (NVIDIA's
    original layout) with `options.base` (a Sana folder giving Gemma 2, the tokenizer, DC-AE
    and scheduler; Sana or Sprint as that folder says), as a SanaModel; `options.defaults`
    (the folder's defaults.json) over `sana_defaults`. --text-encoder refused in one line."""
    from .sana import SanaPipeline

    if options.text_encoders:
        raise ValueError("Sana reads Gemma 2 from its diffusers folder: leave --text-encoder "
                         "out")
    path = Path(path)
    folder, transformer_file = base_folder(path, options.base, "Sana",
                                           parts="Gemma 2, tokenizer, DC-AE and scheduler")
    family = sana_family(folder) or family  # a file's: its base folder's pipeline class
    pipe = SanaPipeline.from_pretrained(folder, dtype=options.dtype, device=options.device,
                                        variant=options.variant,
                                        transformer_file=transformer_file,
                                        offload=options.offload)
    return SanaModel(pipe, family=family, name=module_stem(path),
                     defaults=options.defaults or sana_defaults(path, family))
