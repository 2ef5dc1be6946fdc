"""`OvisImageModel`: Ovis-Image behind the `generate(request)` every door calls, the flow
family's `FlowModel` with Ovis-Image's guidance, and the registry's loader and defaults for it.

The request's CFG scale is diffusers' `guidance_scale`: 1 is no guidance, above 1 a
negative-prompt pass (the request's negative prompt, "" when none is given) combined as
`uncond + cfg * (cond - uncond)`. The "diffusers" sampler runs the pipeline's own loop; the
WebUI's samplers for flow models run over the shifted Simple schedule, from noise or an init
image (img2img, inpainting, the hires fix: FLUX.1's VAE encodes and decodes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...loaders.flow.text_encoder_file import module_stem
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..request import GenerationRequest
from .flow_memory import MemoryLayout
from .flow_model import LLMFlowModel
from .flow_sampling import FLOW_SAMPLERS, FLOW_SCHEDULES

__all__ = ["OVIS_IMAGE_DEFAULTS", "OvisImageModel", "load_ovis_image_model",
           "ovis_image_capabilities", "ovis_image_defaults"]

# OvisImagePipeline's own defaults: 50 steps at guidance_scale 5
OVIS_IMAGE_DEFAULTS = SamplingDefaults(steps=50, sampler="Euler", cfg_scale=5.0,
                                       why="diffusers' Ovis-Image settings")


class OvisImageModel(LLMFlowModel):
    """A loaded Ovis-Image pipeline (`family` "ovis-image", an `OvisImagePipeline` as
    `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """The WebUI samplers defined for flow models over the Simple schedule, CFG with a
        negative prompt, plain-text prompts with LoRA tags, img2img and inpainting, the hires
        fix, First Block Cache (MagCache's and TeaCache's tables are FLUX.1's), the memory
        modes (flow_memory), variation seeds; no ControlNets, no refiner."""
        return ovis_image_capabilities(self.family)

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: Qwen3 (its `hidden_states_of`), the transformer's
        double and single blocks, the VAE."""
        pipe, transformer = self.pipe, self.pipe.transformer
        return MemoryLayout(transformer=transformer,
                            blocks=(transformer.transformer_blocks,
                                    transformer.single_transformer_blocks),
                            text_encoders=(pipe.text_encoder,),
                            text_calls=((pipe.text_encoder, "hidden_states_of"),), vae=pipe.vae)

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """diffusers' guidance_scale (the CFG scale) and the negative prompt."""
        return {"guidance_scale": float(request.cfg_scale),
                "negative_prompt": request.negative_prompt}


def ovis_image_capabilities(family: str) -> Capabilities:
    """What an Ovis-Image model takes (OvisImageModel.capabilities says what): the loaded
    model's, and the registry's before the weights load."""
    return Capabilities(family=family, latent_space="flux", guidance="cfg",
                        samplers=tuple(FLOW_SAMPLERS), schedules=FLOW_SCHEDULES,
                        models="Ovis-Image models", step_cache=("fbc",), prompt_syntax=False,
                        textual_inversion=False, refiner=False, control=False,
                        hires_with_diffusers=False, latent_masked_content=False,
                        memory_modes=True, hires_own_settings=True, noise_multiplier=True)


def ovis_image_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What an Ovis-Image model samples with where its defaults.json says nothing:
    diffusers' 50 steps at guidance 5."""
    return OVIS_IMAGE_DEFAULTS


def load_ovis_image_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                          ) -> OvisImageModel:
    """An Ovis-Image diffusers folder as an OvisImageModel; `options.defaults` (the folder's
    defaults.json) over `ovis_image_defaults`. --base and --text-encoder files are refused
    in one line (the folder holds every part)."""
    from .ovis_image import OvisImagePipeline

    path = Path(path)
    if options.base is not None or options.text_encoders:
        raise ValueError("an Ovis-Image folder holds every part itself: drop --base and "
                         "--text-encoder")
    pipe = OvisImagePipeline.from_pretrained(path, dtype=options.dtype, device=options.device,
                                             variant=options.variant, offload=options.offload)
    return OvisImageModel(pipe, family=family, name=module_stem(path),
                          defaults=options.defaults, modules=pipe.modules)
