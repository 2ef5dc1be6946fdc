"""`CosmosModel`: NVIDIA Cosmos Predict2 Text2Image behind the `generate(request)` every door
calls (the flow family's `FlowModel` with Cosmos' own sampler), and the registry's loader
and defaults for it.

The "diffusers" sampler alone: Cosmos2TextToImagePipeline's EDM Euler loop over Karras
sigmas (the WebUI's flow schedules start at pure noise, which Cosmos' sigma 80 never
reaches). The request's CFG scale is diffusers' `guidance_scale` (`cond + g (cond -
uncond)` on the denoised estimates; 1 or below runs the prompt's pass alone); an empty
negative prompt is Cosmos' own long default. txt2img only: diffusers has no Cosmos img2img.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...loaders.flow.text_encoder_file import module_stem
from ...models.step_cache import StepCache
from ...sampling.kdiffusion import DIFFUSERS
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..finite import pictures_uint8
from ..observer import Observer
from ..request import GenerationRequest
from .flow_model import LLMFlowModel

__all__ = ["COSMOS_DEFAULTS", "CosmosModel", "cosmos_capabilities", "cosmos_defaults",
           "load_cosmos_model"]

# Cosmos2TextToImagePipeline's defaults: 35 steps at guidance 7
COSMOS_DEFAULTS = SamplingDefaults(steps=35, sampler=DIFFUSERS, cfg_scale=7.0,
                                   why="diffusers' Cosmos Predict2 settings (its EDM sampler)")


class CosmosModel(LLMFlowModel):
    """A loaded Cosmos Predict2 Text2Image pipeline (`family` "cosmos2-t2i", a
    `Cosmos2TextToImagePipeline` as `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """Its own sampler ("diffusers"), CFG with a negative prompt, plain-text prompts;
        txt2img only, no hires fix, LoRAs, ControlNets, step cache, refiner, memory modes or
        variation seeds."""
        return cosmos_capabilities(self.family)

    @property
    def native_size(self) -> int:
        """1024: Cosmos Predict2 draws about a megapixel (diffusers' default 1360 x 768)."""
        return 1024

    @property
    def latent_channels(self) -> int:
        return int(self.pipe.vae.config["z_dim"])

    def decode(self, latents: np.ndarray, request: GenerationRequest) -> list[np.ndarray]:
        """The pictures through Wan's VAE (one frame each)."""
        return pictures_uint8(self.pipe.decode(latents), self.pipe.vae)

    def begin_decode(self, request: GenerationRequest, shape: tuple[int, ...]) -> None:
        """Nothing ahead: Wan's VAE builds its kernels as it decodes."""

    def _diffusers(self, request: GenerationRequest, prompts: list[str], seed: int,
                   width: int, height: int, observer: Observer,
                   cache: StepCache | None = None) -> np.ndarray:
        """Cosmos2TextToImagePipeline's loop; an init image refused in one line."""
        if request.init_image is not None:
            raise ValueError("Cosmos Predict2 draws from text alone (diffusers has no Cosmos "
                             "img2img pipeline): leave the init image out")
        return self.pipe(prompts, height=height, width=width,  # type: ignore[no-any-return]
                         num_inference_steps=int(request.steps), seed=seed, rng=request.rng,
                         callback=observer.step, output_type="latent",
                         **self._guidance(request))

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """diffusers' guidance_scale (the CFG scale itself) and the negative prompt."""
        return {"guidance_scale": float(request.cfg_scale),
                "negative_prompt": request.negative_prompt or None}


def cosmos_capabilities(family: str) -> Capabilities:
    """What a Cosmos Predict2 Text2Image model takes (CosmosModel.capabilities says what):
    the loaded model's, and the registry's before the weights load."""
    return Capabilities(family=family, latent_space="wan", guidance="cfg", samplers=(),
                        schedules=None, models="Cosmos Predict2 models", step_cache=(),
                        prompt_syntax=False, textual_inversion=False, refiner=False,
                        control=False, variation_seeds=False, latent_upscale_resize=False,
                        hires=False, hires_with_diffusers=False, latent_masked_content=False,
                        memory_modes=False)


def cosmos_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a Cosmos Predict2 model samples with where its defaults.json says nothing:
    diffusers' pipeline defaults."""
    return COSMOS_DEFAULTS


def load_cosmos_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                      ) -> CosmosModel:
    """A Cosmos Predict2 Text2Image diffusers folder as a CosmosModel; `options.defaults`
    (the folder's defaults.json) over `cosmos_defaults`. --base and --text-encoder files
    refused in one line (the folder holds every part)."""
    from .cosmos import Cosmos2TextToImagePipeline

    if options.base is not None or options.text_encoders:
        raise ValueError("a Cosmos Predict2 folder holds every part: leave --base and "
                         "--text-encoder out")
    pipe = Cosmos2TextToImagePipeline.from_pretrained(
        Path(path), dtype=options.dtype, device=options.device, variant=options.variant,
        offload=options.offload)
    return CosmosModel(pipe, family=family, name=module_stem(Path(path)),
                       defaults=options.defaults or COSMOS_DEFAULTS, modules=pipe.modules)
