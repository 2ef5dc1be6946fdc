"""`NucleusMoEModel`: NucleusMoE-Image behind the `generate(request)` every door calls, the
flow family's `FlowModel` with its guidance, and the registry's loader and defaults for it.

The request's CFG scale is diffusers' `guidance_scale`: 1 is no guidance, above 1 a
negative-prompt pass (the request's negative prompt, "" when none is given) combined as
`uncond + cfg * (cond - uncond)` and rescaled per token to the prompt pass's norm. The
"diffusers" sampler runs the pipeline's own loop; the WebUI's samplers for flow models run
over the shifted Simple schedule, from noise or an init image (img2img, inpainting, the hires
fix: Qwen-Image's VAE encodes and decodes).
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

__all__ = ["NUCLEUSMOE_DEFAULTS", "NucleusMoEModel", "load_nucleusmoe_model",
           "nucleusmoe_capabilities", "nucleusmoe_defaults"]

# NucleusMoEImagePipeline's own defaults: 50 steps at guidance_scale 4
NUCLEUSMOE_DEFAULTS = SamplingDefaults(steps=50, sampler="Euler", cfg_scale=4.0,
                                       why="diffusers' NucleusMoE-Image settings")


class NucleusMoEModel(LLMFlowModel):
    """A loaded NucleusMoE-Image pipeline (`family` "nucleus-moe", a
    `NucleusMoEImagePipeline` as `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """The WebUI samplers defined for flow models over the Simple schedule, CFG with a
        negative prompt, plain-text prompts with LoRA tags, img2img and inpainting, the hires
        fix, the memory modes (flow_memory), variation seeds; no step cache, no ControlNets,
        no refiner."""
        return nucleusmoe_capabilities(self.family)

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: Qwen3-VL (its `hidden_states_of`), the transformer's
        blocks, the VAE."""
        pipe, transformer = self.pipe, self.pipe.transformer
        return MemoryLayout(transformer=transformer, blocks=(transformer.transformer_blocks,),
                            text_encoders=(pipe.text_encoder,),
                            text_calls=((pipe.text_encoder, "hidden_states_of"),), vae=pipe.vae)

    @property
    def latent_channels(self) -> int:
        return int(self.pipe.vae.config["z_dim"])

    def encode_init(self, pixels: np.ndarray, generator: Any) -> np.ndarray:
        """The init image's latents through Qwen-Image's VAE."""
        return self.pipe.encode_image(pixels, generator)  # type: ignore[no-any-return]

    def decode(self, latents: np.ndarray, request: GenerationRequest) -> list[np.ndarray]:
        """The pictures through Qwen-Image's VAE."""
        return pictures_uint8(self.pipe.decode(latents), self.pipe.vae)

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """diffusers' guidance_scale (the CFG scale) and the negative prompt."""
        return {"guidance_scale": float(request.cfg_scale),
                "negative_prompt": request.negative_prompt, **self._length_and_control(request)}


def nucleusmoe_capabilities(family: str) -> Capabilities:
    """What a NucleusMoE-Image model takes (NucleusMoEModel.capabilities says what): the
    loaded model's, and the registry's before the weights load."""
    return Capabilities(family=family, latent_space="qwen-image", guidance="cfg",
                        samplers=tuple(FLOW_SAMPLERS), schedules=FLOW_SCHEDULES,
                        models="NucleusMoE-Image models", step_cache=(), prompt_syntax=False,
                        textual_inversion=False, refiner=False, control=False,
                        hires_with_diffusers=False, latent_masked_content=False,
                        memory_modes=True, hires_own_settings=True, noise_multiplier=True)


def nucleusmoe_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a NucleusMoE-Image model samples with where its defaults.json says nothing:
    diffusers' 50 steps at guidance 4."""
    return NUCLEUSMOE_DEFAULTS


def load_nucleusmoe_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                          ) -> NucleusMoEModel:
    """A NucleusMoE-Image diffusers folder as a NucleusMoEModel; `options.defaults` (the
    folder's defaults.json) over `nucleusmoe_defaults`. --base and --text-encoder files are
    refused in one line (the folder holds every part)."""
    from .nucleusmoe_image import NucleusMoEImagePipeline

    path = Path(path)
    if options.base is not None or options.text_encoders:
        raise ValueError("a NucleusMoE-Image folder holds every part itself: drop --base and "
                         "--text-encoder")
    pipe = NucleusMoEImagePipeline.from_pretrained(
        path, dtype=options.dtype, device=options.device, variant=options.variant,
        offload=options.offload)
    return NucleusMoEModel(pipe, family=family, name=module_stem(path),
                           defaults=options.defaults, modules=pipe.modules)
