"""`Krea2Model`: Krea 2 behind the `generate(request)` every door calls, the flow family's
`FlowModel` with Krea 2's guidance, and the registry's loader and defaults for it.

The request's CFG scale is the usual one: 1 is no guidance (diffusers' `guidance_scale` 0,
what the few-step distilled checkpoint runs at), above 1 a negative-prompt pass combined as
`uncond + cfg * (cond - uncond)`, which is Krea 2's `pos + (cfg - 1) * (pos - neg)`. The
"diffusers" sampler runs Krea2Pipeline's own loop; the WebUI's samplers for flow models run
over the shifted Simple schedule, from noise or an init image (img2img, inpainting, the hires
fix: Qwen-Image's VAE encodes and decodes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...loaders.flow.text_encoder_file import module_stem
from ...loaders.formats.diffusers_folder import read_json
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..finite import pictures_uint8
from ..request import GenerationRequest
from .flow_memory import MemoryLayout
from .flow_model import LLMFlowModel
from .flow_sampling import FLOW_SAMPLERS, FLOW_SCHEDULES
from .start import base_folder

__all__ = ["KREA2_DEFAULTS", "KREA2_DISTILLED_DEFAULTS", "Krea2Model", "krea2_capabilities",
           "krea2_defaults", "load_krea2_model"]

# Krea2Pipeline's own defaults: 28 steps at guidance_scale 4.5 (CFG 5.5)
KREA2_DEFAULTS = SamplingDefaults(steps=28, sampler="Euler", cfg_scale=5.5,
                                  why="diffusers' Krea 2 settings")
# the distilled (TDM) checkpoint's, as Krea2Pipeline's example gives them: 8 steps, guidance 0
KREA2_DISTILLED_DEFAULTS = SamplingDefaults(
    steps=8, sampler="Euler", cfg_scale=1.0,
    why="diffusers' Krea 2 distilled settings; CFG 1 runs without a negative pass")


class Krea2Model(LLMFlowModel):
    """A loaded Krea 2 pipeline (`family` "krea-2", a `Krea2Pipeline` as `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """The WebUI samplers defined for flow models over the Simple schedule, CFG with a
        negative prompt, plain-text prompts, img2img and inpainting, the hires fix, First
        Block Cache, the memory modes (flow_memory), variation seeds; no ControlNets, no
        refiner."""
        return krea2_capabilities(self.family)

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: Qwen3-VL (its `hidden_states_of`), the transformer
        (also brought in by `text`, its text fusion run once a prompt) and its joint blocks,
        the VAE. The text fusion (~0.6 GB in float16 at full size) stays with the fixed
        parts: its blocks sit inside `text_fusion`, which MemoryLayout.fixed keeps whole."""
        pipe, transformer = self.pipe, self.pipe.transformer
        return MemoryLayout(transformer=transformer,
                            blocks=(transformer.transformer_blocks,),
                            text_encoders=(pipe.text_encoder,),
                            text_calls=((pipe.text_encoder, "hidden_states_of"),),
                            vae=pipe.vae, transformer_calls=("text",))

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
        """Krea 2's guidance_scale (the CFG scale less 1) and the negative prompt."""
        return {"guidance_scale": max(float(request.cfg_scale) - 1.0, 0.0),
                "negative_prompt": request.negative_prompt,
                **self._length_and_control(request)}


def krea2_capabilities(family: str) -> Capabilities:
    """What a Krea 2 model takes (Krea2Model.capabilities says what): the loaded model's, and
    the registry's before the weights load."""
    return Capabilities(family=family, latent_space="qwen-image", guidance="cfg",
                        samplers=tuple(FLOW_SAMPLERS), schedules=FLOW_SCHEDULES,
                        models="Krea 2 models", step_cache=("fbc",), prompt_syntax=False,
                        textual_inversion=False, refiner=False, control=False,
                        hires_with_diffusers=False, latent_masked_content=False,
                        memory_modes=True, hires_own_settings=True, noise_multiplier=True)


def krea2_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a Krea 2 model samples with where its defaults.json says nothing: the distilled
    checkpoint's (model_index.json's `is_distilled`) or the base model's (a single file's
    too: its base folder is not known here)."""
    index = Path(path) / "model_index.json"
    distilled = index.is_file() and bool(read_json(index).get("is_distilled"))
    return KREA2_DISTILLED_DEFAULTS if distilled else KREA2_DEFAULTS


def load_krea2_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                     ) -> Krea2Model:
    """A Krea 2 diffusers folder, or a single-file transformer with `options.base` (a Krea 2
    folder giving the text encoder, tokenizer, VAE and scheduler), as a Krea2Model;
    `options.defaults` (the folder's defaults.json) over `krea2_defaults`. A --text-encoder
    file is refused in one line (the text encoder comes from the folder)."""
    from .krea2 import Krea2Pipeline

    path = Path(path)
    if options.text_encoders:
        raise ValueError("Krea 2 reads its text encoder from its diffusers folder: drop "
                         "--text-encoder")
    folder, transformer_file = base_folder(path, options.base, "Krea 2")
    pipe = Krea2Pipeline.from_pretrained(folder, dtype=options.dtype, device=options.device,
                                         variant=options.variant,
                                         transformer_file=transformer_file,
                                         offload=options.offload)
    return Krea2Model(pipe, family=family, name=module_stem(path), defaults=options.defaults,
                      modules=pipe.modules)
