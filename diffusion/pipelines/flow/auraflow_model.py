"""`AuraFlowModel`: AuraFlow behind the `generate(request)` every door calls, the flow family's
`FlowModel` with AuraFlow's guidance, and the registry's loader and defaults for it.

The request's CFG scale is diffusers' `guidance_scale`: 1 is no guidance, above 1 a
negative-prompt pass (the request's negative prompt, "" when none is given) combined as
`uncond + cfg * (cond - uncond)`. The "diffusers" sampler runs the pipeline's own loop; the
WebUI's samplers for flow models run over the shifted Simple schedule, from noise or an init
image (img2img, inpainting, the hires fix: SDXL's VAE encodes and decodes).
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
from .start import base_folder

__all__ = ["AURAFLOW_DEFAULTS", "AuraFlowModel", "auraflow_capabilities", "auraflow_defaults",
           "load_auraflow_model"]

# AuraFlowPipeline's own defaults: 50 steps at guidance_scale 3.5
AURAFLOW_DEFAULTS = SamplingDefaults(steps=50, sampler="Euler", cfg_scale=3.5,
                                     why="diffusers' AuraFlow settings")


class AuraFlowModel(LLMFlowModel):
    """A loaded AuraFlow pipeline (`family` "auraflow", an `AuraFlowPipeline` as `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """The WebUI samplers defined for flow models over the Simple schedule, CFG with a
        negative prompt, plain-text prompts with LoRA tags, img2img and inpainting, the hires
        fix, First Block Cache, the memory modes (flow_memory), variation seeds; no
        ControlNets, no refiner."""
        return auraflow_capabilities(self.family)

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: UMT5, the transformer's joint and single blocks, the
        VAE."""
        pipe, transformer = self.pipe, self.pipe.transformer
        return MemoryLayout(transformer=transformer,
                            blocks=(transformer.joint_transformer_blocks,
                                    transformer.single_transformer_blocks),
                            text_encoders=(pipe.text_encoder,),
                            text_calls=((pipe.text_encoder, "forward"),), vae=pipe.vae)

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """diffusers' guidance_scale (the CFG scale) and the negative prompt."""
        return {"guidance_scale": float(request.cfg_scale),
                "negative_prompt": request.negative_prompt}


def auraflow_capabilities(family: str) -> Capabilities:
    """What an AuraFlow model takes (AuraFlowModel.capabilities says what): the loaded
    model's, and the registry's before the weights load. Its latents are SDXL's (the same
    VAE and scale), so SDXL's previews apply."""
    return Capabilities(family=family, latent_space="sdxl", guidance="cfg",
                        samplers=tuple(FLOW_SAMPLERS), schedules=FLOW_SCHEDULES,
                        models="AuraFlow models", step_cache=("fbc",), prompt_syntax=False,
                        textual_inversion=False, refiner=False, control=False,
                        hires_with_diffusers=False, latent_masked_content=False,
                        memory_modes=True, hires_own_settings=True, noise_multiplier=True)


def auraflow_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What an AuraFlow model samples with where its defaults.json says nothing: diffusers'
    50 steps at guidance 3.5."""
    return AURAFLOW_DEFAULTS


def load_auraflow_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                        ) -> AuraFlowModel:
    """An AuraFlow diffusers folder, or a single-file transformer in fal's names with
    `options.base` (an AuraFlow folder giving the text encoder, tokenizer, VAE and
    scheduler), as an AuraFlowModel; `options.defaults` (the folder's defaults.json) over
    `auraflow_defaults`. --text-encoder files are refused in one line (the folder's is
    read)."""
    from .auraflow import AuraFlowPipeline

    path = Path(path)
    if options.text_encoders:
        raise ValueError("AuraFlow reads its folder's text encoder: drop --text-encoder")
    folder, transformer_file = base_folder(path, options.base, "AuraFlow")
    pipe = AuraFlowPipeline.from_pretrained(folder, dtype=options.dtype, device=options.device,
                                            variant=options.variant,
                                            transformer_file=transformer_file,
                                            offload=options.offload)
    return AuraFlowModel(pipe, family=family, name=module_stem(path), defaults=options.defaults,
                         modules=pipe.modules)
