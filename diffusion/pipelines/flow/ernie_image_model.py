"""`ErnieImageModel`: ERNIE-Image behind the `generate(request)` every door calls, the flow
family's `FlowModel` with ERNIE-Image's guidance, latent space (FLUX.2's patchified,
normalized latents) and decode, and the registry's loader and defaults for it.

The request's CFG scale is diffusers' `guidance_scale`: 1 is no guidance, above 1 a
negative-prompt pass (the request's negative prompt, "" when none is given) combined as
`uncond + cfg * (cond - uncond)`. The "diffusers" sampler runs ErnieImagePipeline's own loop;
the WebUI's samplers for flow models run over the Simple schedule with the folder's fixed
shift, from noise or an init image (img2img, inpainting, the hires fix: FLUX.2's VAE encodes
a posterior draw, patchified and normalized by its batch norm). The prompt enhancer diffusers
can run (`use_pe`) is not run: the picture is diffusers' with `use_pe=False`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...loaders.flow.text_encoder_file import module_stem
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..finite import pictures_uint8
from ..request import GenerationRequest
from .flow_memory import MemoryLayout
from .flow_model import LLMFlowModel
from .flow_sampling import FLOW_SAMPLERS, FLOW_SCHEDULES
from .start import base_folder

__all__ = ["ERNIE_IMAGE_DEFAULTS", "ERNIE_IMAGE_TURBO_DEFAULTS", "ErnieImageModel",
           "ernie_image_capabilities", "ernie_image_defaults", "load_ernie_image_model"]

# ErnieImagePipeline's own defaults: 50 steps at guidance_scale 4
ERNIE_IMAGE_DEFAULTS = SamplingDefaults(steps=50, sampler="Euler", cfg_scale=4.0,
                                        why="diffusers' ERNIE-Image settings")
# ERNIE-Image-Turbo (distilled): its card's 8 steps, without guidance
ERNIE_IMAGE_TURBO_DEFAULTS = SamplingDefaults(
    steps=8, sampler="Euler", cfg_scale=1.0,
    why="the ERNIE-Image-Turbo card's settings; CFG 1 runs without a negative pass")


class ErnieImageModel(LLMFlowModel):
    """A loaded ERNIE-Image pipeline (`family` "ernie-image", an `ErnieImagePipeline` as
    `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """The WebUI samplers defined for flow models over the Simple schedule, CFG with a
        negative prompt, plain-text prompts with LoRA tags, img2img and inpainting, the hires
        fix (its own prompts and sampler too) with the WebUI samplers, First Block Cache
        (MagCache's and TeaCache's tables are FLUX.1's), the memory modes (flow_memory),
        variation seeds; no ControlNets or refiner."""
        return ernie_image_capabilities(self.family)

    @property
    def latent_channels(self) -> int:
        """The transformer's channels: the VAE's 2x2 patches of its latent channels."""
        return int(self.pipe.transformer.config["in_channels"])

    @property
    def latent_scale(self) -> int:
        """16: a latent is a 2x2 patch of the VAE's latents, each 8 pixels a side."""
        return 2 * self.vae_scale_factor

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: the Mistral text encoder (its `hidden_states_of`),
        the transformer's blocks (its embedders, shared modulation and output head stay),
        the VAE."""
        pipe, transformer = self.pipe, self.pipe.transformer
        return MemoryLayout(transformer=transformer, blocks=(transformer.layers,),
                            text_encoders=(pipe.text_encoder,),
                            text_calls=((pipe.text_encoder, "hidden_states_of"),), vae=pipe.vae)

    def encode_init(self, pixels: np.ndarray, generator: Any) -> np.ndarray:
        """The latents (1, 4C, H/16, W/16) of `pixels` (1, 3, H, W) in [-1, 1] as the
        transformer reads them (ErnieImagePipeline.drawn_latents)."""
        return self.pipe.drawn_latents(pixels, generator)  # type: ignore[no-any-return]

    def decode(self, latents: np.ndarray, request: GenerationRequest) -> list[np.ndarray]:
        """The pictures: the VAE's batch norm undone, unpatchified, decoded (in tiles where
        --max-vram asks: FlowMemoryPlan.decode)."""
        return pictures_uint8(self.pipe.decode(latents, run=self.memory_decode()),
                              self.pipe.vae)

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """diffusers' guidance_scale (the CFG scale) and the negative prompt."""
        return {"guidance_scale": float(request.cfg_scale),
                "negative_prompt": request.negative_prompt}


def ernie_image_capabilities(family: str) -> Capabilities:
    """What an ERNIE-Image model takes (ErnieImageModel.capabilities says what): the loaded
    model's, and the registry's before the weights load."""
    return Capabilities(family=family, latent_space="flux2", guidance="cfg",
                        samplers=tuple(FLOW_SAMPLERS), schedules=FLOW_SCHEDULES,
                        models="ERNIE-Image models", step_cache=("fbc",),
                        prompt_syntax=False,
                        textual_inversion=False, refiner=False, control=False,
                        latent_upscale_resize=False, hires_with_diffusers=False,
                        hires_own_settings=True, latent_masked_content=False,
                        memory_modes=True, noise_multiplier=True)


def ernie_image_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What an ERNIE-Image model samples with where its defaults.json says nothing:
    diffusers' 50 steps at guidance 4; a folder named as the distilled Turbo model
    (ERNIE-Image-Turbo: its model_index.json is the same) 8 steps at guidance 1."""
    turbo = "turbo" in Path(path).name.lower()
    return ERNIE_IMAGE_TURBO_DEFAULTS if turbo else ERNIE_IMAGE_DEFAULTS


def load_ernie_image_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                           ) -> ErnieImageModel:
    """An ERNIE-Image diffusers folder, or a single-file transformer with `options.base` (an
    ERNIE-Image folder giving the text encoder, tokenizer, VAE and scheduler), as an
    ErnieImageModel; `options.defaults` (the folder's defaults.json) over
    `ernie_image_defaults`. --text-encoder files are refused in one line (the folder's is
    read)."""
    from .ernie_image import ErnieImagePipeline

    path = Path(path)
    if options.text_encoders:
        raise ValueError("ERNIE-Image reads its folder's text encoder: drop --text-encoder")
    folder, transformer_file = base_folder(path, options.base, "ERNIE-Image")
    pipe = ErnieImagePipeline.from_pretrained(folder, dtype=options.dtype, device=options.device,
                                              variant=options.variant,
                                              transformer_file=transformer_file,
                                              offload=options.offload)
    return ErnieImageModel(pipe, family=family, name=module_stem(path),
                           defaults=options.defaults, modules=pipe.modules)
