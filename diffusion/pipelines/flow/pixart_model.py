"""`PixArtModel`: PixArt-α and PixArt-Σ behind the `generate(request)` every door calls (the
flow family's `FlowModel` with PixArt's samplers), and the registry's loader, defaults and
capabilities for them.

The "diffusers" sampler (the default): PixArtSigmaPipeline's (PixArtAlphaPipeline's)
DPM-Solver++ 2M on epsilon, txt2img (diffusers has no PixArt img2img); the request's CFG scale
is diffusers' `guidance_scale` (1 or below: the prompt's pass alone). The WebUI's k-diffusion
samplers and schedule types run as on SD (PixArt predicts noise over a DDPM schedule:
pixart_webui), txt2img, img2img and inpainting. txt2img is drawn at the model's aspect-ratio
bin nearest the size asked and resized back, as diffusers does by default (the request's
use_resolution_binning).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...loaders.flow.text_encoder_file import module_stem
from ...loaders.formats.diffusers_folder import read_json
from ...loaders.pixart import pixart_family
from ...models.step_cache import StepCache
from ...sampling.kdiffusion import DIFFUSERS
from ...sampling.kdiffusion_pass import WebUISeeds
from ...sampling.schedulers import get_scheduler
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..finite import pictures_uint8
from ..generation import Denoised
from ..observer import Observer
from ..request import GenerationRequest
from .flow_memory import MemoryLayout
from .flow_model import LLMFlowModel
from .pixart import pixart_binned_size
from .pixart_webui import (
    PIXART_SAMPLERS,
    TIMESTEP_SAMPLERS,
    pixart_schedule_label,
    sample_pixart,
)
from .start import base_folder

__all__ = ["LCM_DEFAULTS", "PIXART_DEFAULTS", "PixArtModel", "load_pixart_model",
           "pixart_capabilities", "pixart_defaults"]

# PixArtSigmaPipeline's (and PixArtAlphaPipeline's) defaults: 20 steps at guidance 4.5
PIXART_DEFAULTS = SamplingDefaults(steps=20, sampler=DIFFUSERS, cfg_scale=4.5,
                                   why="diffusers' PixArt settings (its DPM-Solver++ 2M)")


# PixArt-LCM's card: 4 steps, guidance_scale 0 (CFG 1 here: the prompt's pass alone)
LCM_DEFAULTS = SamplingDefaults(steps=4, sampler=DIFFUSERS, cfg_scale=1.0,
                                why="PixArt-LCM's settings (its LCMScheduler, no CFG)")


class PixArtModel(LLMFlowModel):
    """A loaded PixArt-Σ or PixArt-α pipeline (`family` "pixart-sigma" or "pixart-alpha", a
    `PixArtPipeline` as `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """Its own sampler ("diffusers"), the WebUI's k-diffusion samplers (img2img and
        inpainting with them) and DDIM, PLMS, UniPC (txt2img), CFG with a negative prompt,
        plain-text prompts, the memory modes; no hires fix, ControlNets, step cache or
        refiner."""
        return pixart_capabilities(self.family)

    @property
    def native_size(self) -> int:
        """The side the transformer was trained at: its sample_size latents (1024 pixels for
        the 1024 models)."""
        return int(self.pipe.default_size)

    @property
    def latent_channels(self) -> int:
        return int(self.pipe.vae.config["latent_channels"])

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: T5, the transformer's blocks, the SD VAE."""
        pipe, transformer = self.pipe, self.pipe.transformer
        return MemoryLayout(transformer=transformer, blocks=(transformer.transformer_blocks,),
                            text_encoders=(pipe.text_encoder,),
                            text_calls=((pipe.text_encoder, "forward"),), vae=pipe.vae)

    def use_vae(self, path: str | os.PathLike[str]) -> None:
        raise ValueError("PixArt decodes with its folder's vae/: leave --vae out")

    def check(self, request: GenerationRequest, width: int, height: int) -> None:
        """An init image with a k-diffusion sampler only (diffusers has no PixArt img2img, for
        its own sampler or the timestep ones), sides in whole 2x2 latent patches (multiples
        of 16). One line each otherwise. (AND is a word to the pipeline's T5, as to
        diffusers'.)"""
        label = request.sampler_label[0]
        if request.init_image is not None and (label == DIFFUSERS
                                               or label in TIMESTEP_SAMPLERS):
            which = "PixArt's own sampler ('diffusers')" if label == DIFFUSERS else label
            raise ValueError(f"{which} draws from noise only on PixArt (diffusers has no "
                             "PixArt img2img): pick a k-diffusion sampler (Euler, DPM++ 2M) "
                             "for img2img and inpainting")
        multiple = 2 * self.vae_scale_factor
        for name, side in (("width", width), ("height", height)):
            if side % multiple:
                raise ValueError(f"{name} must be a multiple of {multiple} for PixArt models "
                                 f"(2x2 patches of latents), got {side}; try "
                                 f"{max(multiple, side // multiple * multiple)}")

    def binned(self, request: GenerationRequest, width: int, height: int
               ) -> tuple[int, int] | None:
        """The (width, height) a txt2img request is drawn at where resolution binning moves
        it (diffusers' default), else None."""
        if not request.use_resolution_binning or request.init_image is not None:
            return None
        bins = pixart_binned_size(self.pipe.sample_size, height, width)
        return None if bins is None or bins == (height, width) else (bins[1], bins[0])

    def denoise(self, request: GenerationRequest, seed: int, width: int, height: int,
                observer: Observer) -> Denoised:
        """The flow families' denoising at the size binning gives (`binned`); a WebUI
        sampler's schedule type in the infotext."""
        width, height = self.binned(request, width, height) or (width, height)
        denoised = super().denoise(request, seed, width, height, observer)
        label = request.sampler_label[0]
        if label in TIMESTEP_SAMPLERS:  # the batch's noise from the one seed, as on SD
            denoised.seeds = [seed] * len(denoised.seeds)
            denoised.fields["seeds"] = denoised.seeds
        if label != DIFFUSERS:
            denoised.fields["scheduler"] = pixart_schedule_label(self, request)
        return denoised

    def _webui(self, request: GenerationRequest, label: str, prompts: list[str],
               seeds: WebUISeeds, width: int, height: int, observer: Observer,
               cache: StepCache | None) -> np.ndarray:
        """A WebUI k-diffusion sampler on the noise prediction, as on SD (pixart_webui), or a
        timestep sampler's diffusers scheduler in the pipeline's loop (`_timestep_config`); a
        step cache refused in one line."""
        if cache is not None:
            raise ValueError("PixArt runs without a step cache; leave --cache out")
        if label in TIMESTEP_SAMPLERS:
            return self.pipe(  # type: ignore[no-any-return]
                prompts, height=height, width=width, num_inference_steps=int(request.steps),
                seed=seeds.seeds[0], rng=request.rng, callback=observer.step,
                output_type="latent", use_resolution_binning=False,
                scheduler=get_scheduler(label, _timestep_config(self.pipe.scheduler_config)),
                **self._guidance(request))
        return sample_pixart(self, request, label, prompts, seeds, width, height, observer)

    def begin_decode(self, request: GenerationRequest, shape: tuple[int, ...]) -> None:
        """Nothing ahead: the decode may resize back to the size asked."""

    def _diffusers(self, request: GenerationRequest, prompts: list[str], seed: int,
                   width: int, height: int, observer: Observer,
                   cache: StepCache | None = None) -> np.ndarray:
        """The pipeline's own loop at the size `denoise` gives, binned already; a step cache
        refused in one line."""
        if cache is not None:
            raise ValueError("PixArt runs without a step cache; leave --cache out")
        return self.pipe(prompts, height=height, width=width,  # type: ignore[no-any-return]
                         num_inference_steps=int(request.steps), seed=seed, rng=request.rng,
                         callback=observer.step, output_type="latent",
                         use_resolution_binning=False, **self._guidance(request))

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """diffusers' guidance_scale (the CFG scale itself) and the negative prompt."""
        return {"guidance_scale": float(request.cfg_scale),
                "negative_prompt": request.negative_prompt}

    def decode(self, latents: np.ndarray, request: GenerationRequest | None = None
               ) -> list[np.ndarray]:
        """The pictures (H, W, 3) uint8 of transformer latents by the SD VAE, resized back to
        the size asked where `binned` moved it."""
        size = None
        if request is not None:
            asked = (int(request.width or self.native_size),
                     int(request.height or self.native_size))
            if self.binned(request, *asked) is not None:
                size = asked[::-1]
        return pictures_uint8(self.pipe.decode(latents, size, self.memory_decode()),
                              self.pipe.vae)


def _timestep_config(config: dict[str, Any]) -> dict[str, Any]:
    """The folder's DPM-Solver++ config for a timestep sampler's scheduler: DDIM's x0
    unclipped (as the WebUI's DDIM and SD's folders have it: PixArt's names no clip_sample,
    and diffusers' default would clip the latents to [-1, 1]), DPM-Solver's solver_type left
    out (UniPC's is then bh2, what diffusers' UniPCMultistepScheduler makes of "midpoint")."""
    kept = {k: v for k, v in config.items() if k != "solver_type"}
    return {**kept, "clip_sample": False}


def pixart_capabilities(family: str) -> Capabilities:
    """What a PixArt model takes (PixArtModel.capabilities says what): the loaded model's, and
    the registry's before the weights load."""
    return Capabilities(family=family, latent_space="pixart", guidance="cfg",
                        samplers=PIXART_SAMPLERS, schedules=None, models="PixArt models",
                        step_cache=(), prompt_syntax=False, textual_inversion=False,
                        refiner=False, control=False, hires=False, hires_with_diffusers=False,
                        latent_masked_content=False, noise_multiplier=True, memory_modes=True)


def pixart_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a PixArt model samples with where its defaults.json says nothing: diffusers'
    pipeline defaults; a folder whose scheduler is an LCMScheduler (PixArt-LCM), its card's
    4 steps without CFG."""
    found = Path(path) / "scheduler" / "scheduler_config.json"
    config = read_json(found) if found.is_file() else {}
    return LCM_DEFAULTS if config.get("_class_name") == "LCMScheduler" else PIXART_DEFAULTS


def load_pixart_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                      ) -> PixArtModel:
    """A PixArt-α or PixArt-Σ diffusers folder, or a single-file transformer (the PixArt
    repositories' original layout) with `options.base` (a PixArt folder giving T5, the
    tokenizer, the VAE and the scheduler; α or Σ as that folder says), as a PixArtModel;
    `options.defaults` (the folder's defaults.json) over `pixart_defaults`. --text-encoder
    refused in one line."""
    from .pixart import PixArtPipeline

    if options.text_encoders:
        raise ValueError("PixArt reads T5 from its diffusers folder: leave --text-encoder out")
    path = Path(path)
    folder, transformer_file = base_folder(path, options.base, "PixArt",
                                           parts="T5, tokenizer, VAE and scheduler")
    pipe = PixArtPipeline.from_pretrained(
        folder, dtype=options.dtype, device=options.device, variant=options.variant,
        transformer_file=transformer_file, offload=options.offload)
    return PixArtModel(pipe, family=pixart_family(folder) or family, name=module_stem(path),
                       defaults=options.defaults or pixart_defaults(folder, family))
