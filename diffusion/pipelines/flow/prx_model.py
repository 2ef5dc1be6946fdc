"""`PRXModel`: PRX behind the `generate(request)` every door calls, the flow family's
`FlowModel` with PRX's guidance, and the registry's loader and defaults for it.

The request's CFG scale is diffusers' `guidance_scale`: 1 is no guidance, above 1 a
negative-prompt pass (the request's negative prompt, "" when none is given) combined as
`uncond + cfg * (cond - uncond)`. The "diffusers" sampler runs the pipeline's own loop; the
WebUI's samplers for flow models run over the shifted Simple schedule, from noise or an init
image (img2img, inpainting, the hires fix: FLUX.1's VAE encodes and decodes). A -dc-ae folder
("prx-dc-ae") encodes and decodes with Sana's DC-AE as Sana does (deterministic, no
posterior); its own sampler ("diffusers") draws from noise only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from gpustd import asarray

from ...loaders.flow.text_encoder_file import module_stem
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..finite import check_encoded, pictures_uint8
from ..request import GenerationRequest
from .flow_memory import MemoryLayout
from .flow_model import LLMFlowModel
from .flow_sampling import FLOW_SAMPLERS, FLOW_SCHEDULES

__all__ = ["PRX_DEFAULTS", "PRXModel", "load_prx_model", "prx_capabilities", "prx_defaults"]

# PRXPipeline's own defaults: 28 steps at guidance_scale 4
PRX_DEFAULTS = SamplingDefaults(steps=28, sampler="Euler", cfg_scale=4.0,
                                why="diffusers' PRX settings")


class PRXModel(LLMFlowModel):
    """A loaded PRX pipeline (`family` "prx", or "prx-dc-ae" with a DC-AE; a `PRXPipeline`
    as `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """The WebUI samplers defined for flow models over the Simple schedule, CFG with a
        negative prompt, plain-text prompts with LoRA tags, img2img and inpainting, the hires
        fix, the memory modes (flow_memory), variation seeds; no step caches, no
        ControlNets, no refiner."""
        return prx_capabilities(self.family)

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

    def encode_init(self, pixels: np.ndarray, generator: Any) -> np.ndarray:
        """The init image's latents in the transformer's space: FLUX.1's VAE's posterior draw
        (FlowModel's), or a DC-AE's latents times its scaling factor (`generator` unused)."""
        if not self.pipe.dc_ae:
            return super().encode_init(pixels, generator)
        vae = self.pipe.vae
        weight = vae.decoder.conv_in.weight
        latents = vae.encode(asarray(pixels.astype(np.float32), dtype=weight.dtype,
                                     device=weight.device)).numpy().astype(np.float32)
        check_encoded(latents, vae)
        return latents * np.float32(vae.scaling_factor)

    def decode(self, latents: np.ndarray, request: GenerationRequest) -> list[np.ndarray]:
        """The pictures: FlowModel's, or the DC-AE's (PRXPipeline.decode, in the memory
        mode's way where one is set)."""
        if not self.pipe.dc_ae:
            return super().decode(latents, request)
        return pictures_uint8(self.pipe.decode(latents, self.memory_decode()), self.pipe.vae)


def prx_capabilities(family: str) -> Capabilities:
    """What a PRX model takes (PRXModel.capabilities says what; a "prx-dc-ae" model's
    latents are Sana's DC-AE's): the loaded model's, and the registry's before the weights
    load."""
    dc_ae = family == "prx-dc-ae"
    return Capabilities(family=family, latent_space="sana" if dc_ae else "flux", guidance="cfg",
                        samplers=tuple(FLOW_SAMPLERS), schedules=FLOW_SCHEDULES,
                        models="PRX DC-AE models" if dc_ae else "PRX models", step_cache=(),
                        prompt_syntax=False,
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
