"""`CogView4Model`: CogView4 behind the `generate(request)` every door calls, the flow family's
`FlowModel` with CogView4's guidance, and the registry's loader and defaults for it.

The request's CFG scale is diffusers' `guidance_scale`: 1 is no guidance, above 1 a
negative-prompt pass (the request's negative prompt, "" when none is given) combined as
`uncond + cfg * (cond - uncond)`. The "diffusers" sampler runs the pipeline's own loop (its
integer timesteps, its sqrt-shifted schedule); the WebUI's samplers for flow models run over
the shifted Simple schedule, from noise or an init image (img2img, inpainting, the hires fix).
The size conditioning is diffusers' default: the original and target size the picture's, no
crop.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...loaders import WeightsError
from ...loaders.flow.text_encoder_file import module_stem
from ...loaders.formats.diffusers_folder import read_json
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..request import GenerationRequest
from .cogview4_control import CogView4ControlPasses, control_channels
from .flow_memory import MemoryLayout
from .flow_model import LLMFlowModel
from .flow_sampling import FLOW_SAMPLERS, FLOW_SCHEDULES

__all__ = ["COGVIEW4_DEFAULTS", "CogView4Model", "cogview4_capabilities", "cogview4_defaults",
           "folder_capabilities", "load_cogview4_model"]

# CogView4Pipeline's own defaults: 50 steps at guidance_scale 5
COGVIEW4_DEFAULTS = SamplingDefaults(steps=50, sampler="Euler", cfg_scale=5.0,
                                     why="diffusers' CogView4 settings")


class CogView4Model(CogView4ControlPasses, LLMFlowModel):
    """A loaded CogView4 pipeline (`family` "cogview4", a `CogView4Pipeline` as `pipe`); a
    control model's map among the request's units (CogView4ControlPasses)."""

    @property
    def capabilities(self) -> Capabilities:
        """The WebUI samplers defined for flow models over the Simple schedule, CFG with a
        negative prompt, plain-text prompts with LoRA tags, img2img and inpainting, the hires
        fix, First Block Cache, the memory modes (flow_memory), variation seeds; the control
        model's map; no ControlNets, no refiner."""
        return cogview4_capabilities(self.pipe.transformer.config)

    def use_vae(self, path: str | os.PathLike[str]) -> None:
        """A --vae file is refused in one line: the folder's VAE is CogView4's own."""
        raise ValueError("CogView4 decodes with its folder's own VAE: drop --vae")

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: GLM-4 (its `hidden_states`), the transformer's blocks,
        the VAE."""
        pipe, transformer = self.pipe, self.pipe.transformer
        return MemoryLayout(transformer=transformer, blocks=(transformer.transformer_blocks,),
                            text_encoders=(pipe.text_encoder,),
                            text_calls=((pipe.text_encoder, "hidden_states"),), vae=pipe.vae)

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """diffusers' guidance_scale (the CFG scale) and the negative prompt."""
        return {"guidance_scale": float(request.cfg_scale),
                "negative_prompt": request.negative_prompt}


def cogview4_capabilities(config: Mapping[str, Any] | None = None) -> Capabilities:
    """What a CogView4 model takes (CogView4Model.capabilities says what): the loaded
    model's, and the registry's before the weights load (`folder_capabilities`); `config`
    the transformer's (a control model's wider input asks for its map)."""
    # its VAE is CogView3's 16-channel one (block_out_channels 128, 512, 1024, 1024; scaling
    # 1, no shift), not FLUX.1's: a space of its own, so neither FLUX.1's Approx cheap
    # factors nor its TAESD (taef1) draw its previews
    return Capabilities(family="cogview4", latent_space="cogview4", guidance="cfg",
                        samplers=tuple(FLOW_SAMPLERS), schedules=FLOW_SCHEDULES,
                        models="CogView4 models", step_cache=("fbc",), prompt_syntax=False,
                        textual_inversion=False, refiner=False, control=False,
                        hires_with_diffusers=False, latent_masked_content=False,
                        memory_modes=True, hires_own_settings=True, noise_multiplier=True,
                        control_map=bool(config and control_channels(config)))


def folder_capabilities(path: str | os.PathLike[str], family: str) -> Capabilities:
    """`cogview4_capabilities` of the folder at `path`, read from its
    transformer/config.json before the weights load (without one, or a broken one:
    CogView4-6B's; loading names what is wrong)."""
    try:
        return cogview4_capabilities(read_json(Path(path) / "transformer" / "config.json"))
    except WeightsError:
        return cogview4_capabilities()


def cogview4_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a CogView4 model samples with where its defaults.json says nothing: diffusers'
    50 steps at guidance 5."""
    return COGVIEW4_DEFAULTS


def load_cogview4_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                        ) -> CogView4Model:
    """A CogView4 diffusers folder as a CogView4Model; `options.defaults` (the folder's
    defaults.json) over `cogview4_defaults`. --base and --text-encoder files are refused in
    one line (the folder holds every part)."""
    from .cogview4 import CogView4Pipeline

    path = Path(path)
    if options.base is not None or options.text_encoders:
        raise ValueError("a CogView4 folder holds every part itself: drop --base and "
                         "--text-encoder")
    pipe = CogView4Pipeline.from_pretrained(path, dtype=options.dtype, device=options.device,
                                            variant=options.variant, offload=options.offload)
    return CogView4Model(pipe, family=family, name=module_stem(path),
                         defaults=options.defaults, modules=pipe.modules)
