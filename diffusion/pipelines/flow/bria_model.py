"""`BriaModel`: Bria 3.2 behind the `generate(request)` every door calls, the flow family's
`FlowModel` with Bria's guidance, and the registry's loader and defaults for it.

The request's CFG scale is diffusers' `guidance_scale`: 1 is no guidance, above 1 a second
pass on the negative prompt's T5 states (all zeros where the negative prompt is empty, as
BriaPipeline does), combined as `uncond + cfg * (cond - uncond)`. The "diffusers" sampler
runs the pipeline's own loop (the training sigmas shifted by the config's constant); the
WebUI's samplers for flow models run over the shifted Simple schedule, from noise or an init
image (img2img, inpainting, the hires fix). Prompts take LoRA tags (the transformer's) and
Forge's emphasis on T5.
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

__all__ = ["BRIA_DEFAULTS", "BriaModel", "bria_capabilities", "bria_defaults",
           "load_bria_model"]

# BriaPipeline's own defaults: 30 steps at guidance_scale 5
BRIA_DEFAULTS = SamplingDefaults(steps=30, sampler="Euler", cfg_scale=5.0,
                                 why="diffusers' Bria 3.2 settings")


class BriaModel(LLMFlowModel):
    """A loaded Bria 3.2 pipeline (`family` "bria", a `BriaPipeline` as `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """The WebUI samplers defined for flow models over the Simple schedule, CFG with a
        negative prompt, prompts with LoRA tags and T5 emphasis, img2img and inpainting, the
        hires fix, First Block Cache, the memory modes (flow_memory), variation seeds; no
        ControlNets, no refiner."""
        return bria_capabilities(self.family)

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: T5 (its `forward`), the transformer's double and
        single blocks (the first one's `modulated_input`, which a step cache measures), the
        VAE."""
        pipe, transformer = self.pipe, self.pipe.transformer
        first = list(transformer.transformer_blocks)[:1]
        return MemoryLayout(transformer=transformer,
                            blocks=(transformer.transformer_blocks,
                                    transformer.single_transformer_blocks),
                            text_encoders=(pipe.text_encoder,),
                            text_calls=((pipe.text_encoder, "forward"),), vae=pipe.vae,
                            block_calls=tuple((block, "modulated_input") for block in first))

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """diffusers' guidance_scale (the CFG scale), the negative prompt, and the prompt's
        length where the model sets one."""
        length = ({} if self.max_sequence_length is None
                  else {"max_sequence_length": int(self.max_sequence_length)})
        return {"guidance_scale": float(request.cfg_scale),
                "negative_prompt": request.negative_prompt, **length}


def bria_capabilities(family: str) -> Capabilities:
    """What a Bria model takes (BriaModel.capabilities says what): the loaded model's, and
    the registry's before the weights load."""
    return Capabilities(family=family, latent_space="bria", guidance="cfg",
                        samplers=tuple(FLOW_SAMPLERS), schedules=FLOW_SCHEDULES,
                        models="Bria models", step_cache=("fbc",), prompt_syntax=False,
                        textual_inversion=False, refiner=False, control=False,
                        hires_with_diffusers=False, latent_masked_content=False,
                        memory_modes=True, hires_own_settings=True, noise_multiplier=True)


def bria_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a Bria model samples with where its defaults.json says nothing: diffusers' 30
    steps at guidance 5."""
    return BRIA_DEFAULTS


def load_bria_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                    ) -> BriaModel:
    """A Bria diffusers folder as a BriaModel; `options.defaults` (the folder's
    defaults.json) over `bria_defaults`. --base and --text-encoder files are refused in one
    line (the folder holds every part)."""
    from .bria import BriaPipeline

    path = Path(path)
    if options.base is not None or options.text_encoders:
        raise ValueError("a Bria folder holds every part itself: drop --base and "
                         "--text-encoder")
    pipe = BriaPipeline.from_pretrained(path, dtype=options.dtype, device=options.device,
                                        variant=options.variant, offload=options.offload)
    return BriaModel(pipe, family=family, name=module_stem(path), defaults=options.defaults,
                     modules=pipe.modules)
