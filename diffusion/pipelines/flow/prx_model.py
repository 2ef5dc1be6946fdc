"""`PRXModel`: PRX behind the `generate(request)` every door calls, the flow family's
`FlowModel` with PRX's guidance, and the registry's loader and defaults for it.

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

__all__ = ["PRX_DEFAULTS", "PRXModel", "load_prx_model", "prx_capabilities", "prx_defaults"]

# PRXPipeline's own defaults: 28 steps at guidance_scale 4
PRX_DEFAULTS = SamplingDefaults(steps=28, sampler="Euler", cfg_scale=4.0,
                                why="diffusers' PRX settings")


class PRXModel(LLMFlowModel):
    """A loaded PRX pipeline (`family` "prx", a `PRXPipeline` as `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """The WebUI samplers defined for flow models over the Simple schedule, CFG with a
        negative prompt, plain-text prompts with LoRA tags, img2img and inpainting, the hires
        fix, the memory modes (flow_memory), variation seeds; no step caches, no
        ControlNets, no refiner."""
        return prx_capabilities("prx")

    @property
    def native_size(self) -> int:
        """The side the model was trained at: PRXPipeline's default_sample_size (512 for
        prx-512-*), 1024 where the folder does not say."""
        return int(getattr(self.pipe, "sample_size", 1024))

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: T5Gemma's encoder (its `hidden_states`), the
        transformer's blocks, the VAE."""
        pipe, transformer = self.pipe, self.pipe.transformer
        return MemoryLayout(transformer=transformer, blocks=(transformer.blocks,),
                            text_encoders=(pipe.text_encoder,),
                            text_calls=((pipe.text_encoder, "hidden_states"),), vae=pipe.vae)

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """diffusers' guidance_scale (the CFG scale) and the negative prompt."""
        return {"guidance_scale": float(request.cfg_scale),
                "negative_prompt": request.negative_prompt}


def prx_capabilities(family: str) -> Capabilities:
    """What a PRX model takes (PRXModel.capabilities says what): the loaded model's, and the
    registry's before the weights load."""
    return Capabilities(family=family, latent_space="flux", guidance="cfg",
                        samplers=tuple(FLOW_SAMPLERS), schedules=FLOW_SCHEDULES,
                        models="PRX models", step_cache=(), prompt_syntax=False,
                        textual_inversion=False, refiner=False, control=False,
                        hires_with_diffusers=False, latent_masked_content=False,
                        memory_modes=True, hires_own_settings=True, noise_multiplier=True)


def prx_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a PRX model samples with where its defaults.json says nothing: diffusers' 28
    steps at guidance 4."""
    return PRX_DEFAULTS


def load_prx_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                   ) -> PRXModel:
    """A PRX diffusers folder as a PRXModel; `options.defaults` (the folder's defaults.json)
    over `prx_defaults`. --base and --text-encoder files are refused in one line (the folder
    holds every part)."""
    from .prx import PRXPipeline

    path = Path(path)
    if options.base is not None or options.text_encoders:
        raise ValueError("a PRX folder holds every part itself: drop --base and "
                         "--text-encoder")
    pipe = PRXPipeline.from_pretrained(path, dtype=options.dtype, device=options.device,
                                       variant=options.variant, offload=options.offload)
    return PRXModel(pipe, family=family, name=module_stem(path), defaults=options.defaults,
                    modules=pipe.modules)
