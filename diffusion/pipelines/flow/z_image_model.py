"""`ZImageModel`: Z-Image (Turbo and Base) behind the `generate(request)` every door calls,
the flow family's `FlowModel` with Z-Image's guidance, and the registry's loader and
defaults for it.

The request's CFG scale is the usual one: 1 is no guidance (diffusers' `guidance_scale` 0,
what Turbo runs at), above 1 a negative-prompt pass combined as `uncond + cfg * (cond -
uncond)`, which is diffusers' `pos + (cfg - 1) * (pos - neg)`. The "diffusers" sampler runs
ZImagePipeline's own loop (and ZImageImg2ImgPipeline's / ZImageInpaintPipeline's); the
WebUI's samplers for flow models run over the shifted Simple schedule.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...loaders.flow.text_encoder_file import module_stem
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..model_defaults import is_turbo
from ..request import GenerationRequest
from .flow_memory import MemoryLayout
from .flow_model import LLMFlowModel
from .flow_sampling import FLOW_SAMPLERS, FLOW_SCHEDULES
from .start import base_folder

__all__ = ["ZIMAGE_BASE_DEFAULTS", "ZIMAGE_DEFAULTS", "ZImageModel", "load_zimage_model",
           "zimage_capabilities", "zimage_defaults"]

# Z-Image Turbo's card: 9 steps at guidance 0, i.e. CFG 1 (diffusers' example takes 8)
ZIMAGE_DEFAULTS = SamplingDefaults(
    steps=9, sampler="Euler", cfg_scale=1.0,
    why="diffusers' Z-Image settings; CFG 1 runs without a negative pass")
# Z-Image (Base): ZImagePipeline's own defaults, 50 steps at guidance_scale 5 (CFG 6)
ZIMAGE_BASE_DEFAULTS = SamplingDefaults(steps=50, sampler="Euler", cfg_scale=6.0,
                                        why="diffusers' Z-Image settings")


class ZImageModel(LLMFlowModel):
    """A loaded Z-Image pipeline (`family` "z-image", a `ZImagePipeline` as `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """The WebUI samplers defined for flow models over the Simple schedule, CFG with a
        negative prompt, plain-text prompts with LoRA tags, img2img and inpainting, the hires
        fix, First Block Cache (MagCache's and TeaCache's tables are FLUX's), the memory modes
        (flow_memory), ControlNet units (Z-Image's Fun ControlNets: flow_control), variation
        seeds; no refiner yet."""
        return zimage_capabilities(self.family)

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: Qwen3 (its `hidden_states_of`), the transformer's
        refiner and joint blocks, the VAE."""
        pipe, transformer = self.pipe, self.pipe.transformer
        return MemoryLayout(transformer=transformer,
                            blocks=(transformer.noise_refiner, transformer.context_refiner,
                                    transformer.layers),
                            text_encoders=(pipe.text_encoder,),
                            text_calls=((pipe.text_encoder, "hidden_states_of"),), vae=pipe.vae)

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """diffusers' guidance_scale (the CFG scale less 1), the negative prompt, and the
        request's ControlNet units (a FlowControl of its own for each call)."""
        extra = self._length_and_control(request)
        return {"guidance_scale": max(float(request.cfg_scale) - 1.0, 0.0),
                "negative_prompt": request.negative_prompt, **extra}


def zimage_capabilities(family: str) -> Capabilities:
    """What a Z-Image model takes (ZImageModel.capabilities says what): the loaded model's,
    and the registry's before the weights load."""
    return Capabilities(family=family, latent_space="flux", guidance="cfg",
                        samplers=tuple(FLOW_SAMPLERS), schedules=FLOW_SCHEDULES,
                        models="Z-Image models", step_cache=("fbc",), prompt_syntax=False,
                        textual_inversion=False, refiner=False, control=True,
                        hires_with_diffusers=False, latent_masked_content=False,
                        memory_modes=True, control_on_host=True,
                        hires_own_settings=True, noise_multiplier=True)


def zimage_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a Z-Image model samples with where its defaults.json says nothing: Turbo's for a
    model that says it is Turbo ("turbo" in its name, `is_turbo`), the Base model's else."""
    return ZIMAGE_DEFAULTS if is_turbo(path) else ZIMAGE_BASE_DEFAULTS


def load_zimage_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                      ) -> ZImageModel:
    """A Z-Image diffusers folder, or a single-file transformer with `options.base` (a Z-Image
    folder giving the text encoder, tokenizer, VAE and scheduler), as a ZImageModel;
    `options.defaults` (the folder's defaults.json) over `zimage_defaults`."""
    from .z_image import ZImagePipeline

    path = Path(path)
    folder, transformer_file = base_folder(path, options.base, "Z-Image")
    pipe = ZImagePipeline.from_pretrained(
        folder, dtype=options.dtype, device=options.device, variant=options.variant,
        transformer_file=transformer_file, text_encoder_files=list(options.text_encoders),
        offload=options.offload)
    defaults = options.defaults  # defaults.json over the family's (model_defaults)
    name = module_stem(path)  # as Forge names a file's model
    return ZImageModel(pipe, family=family, name=name, defaults=defaults, modules=pipe.modules)
