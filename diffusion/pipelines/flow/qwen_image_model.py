"""`QwenImageModel`: Qwen-Image behind the `generate(request)` every door calls, the flow
family's `FlowModel` with Qwen-Image's true CFG, and the registry's loader and defaults for
it.

The request's CFG scale is diffusers' `true_cfg_scale`: 1 is no guidance, above 1 a
negative-prompt pass (the request's negative prompt, "" when none is given) combined as
`neg + cfg * (pos - neg)` and rescaled to the positive prediction's norm, as
QwenImagePipeline does. The "diffusers" sampler runs QwenImagePipeline's own loop (and
QwenImageImg2ImgPipeline's, from an init image); the WebUI's samplers for flow models run over
the shifted Simple schedule, from noise or an init image, and the hires fix with them
(flow_hires, the Qwen-Image VAE decoding and encoding); inpainting with either (the
"diffusers" sampler as QwenImageInpaintPipeline, the WebUI samplers as on FLUX).
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

__all__ = ["QWENIMAGE_DEFAULTS", "QwenImageModel", "load_qwenimage_model", "qwenimage_capabilities",
           "qwenimage_defaults"]

# QwenImagePipeline's own defaults: 50 steps at true_cfg_scale 4
QWENIMAGE_DEFAULTS = SamplingDefaults(
    steps=50, sampler="Euler", cfg_scale=4.0,
    why="diffusers' Qwen-Image settings; CFG is its true_cfg_scale")


class QwenImageModel(LLMFlowModel):
    """A loaded Qwen-Image pipeline (`family` "qwen-image", a `QwenImagePipeline` as
    `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """The WebUI samplers defined for flow models over the Simple schedule, true CFG with
        a negative prompt, plain-text prompts with LoRA tags, img2img, the memory modes
        (flow_memory), ControlNet units on Qwen-Image (InstantX's: flow_control; not on the
        edit models), variation seeds, the hires fix, inpainting; no refiner yet; First Block
        Cache (MagCache's and TeaCache's tables are FLUX's)."""
        return qwenimage_capabilities(self.family)

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: Qwen2.5-VL (its `hidden_states_of`), the transformer's
        blocks, the VAE."""
        pipe = self.pipe
        return MemoryLayout(transformer=pipe.transformer,
                            blocks=(pipe.transformer.transformer_blocks,),
                            text_encoders=(pipe.text_encoder,),
                            text_calls=((pipe.text_encoder, "hidden_states_of"),), vae=pipe.vae)

    @property
    def latent_channels(self) -> int:
        return int(self.pipe.vae.config["z_dim"])

    def encode_init(self, pixels: np.ndarray, generator: Any) -> np.ndarray:
        """The init image's latents through the Qwen-Image VAE (`QwenImagePipeline.
        encode_image`)."""
        return self.pipe.encode_image(pixels, generator)  # type: ignore[no-any-return]

    def decode(self, latents: np.ndarray, request: GenerationRequest) -> list[np.ndarray]:
        """The pictures through the Qwen-Image VAE."""
        return pictures_uint8(self.pipe.decode(latents), self.pipe.vae)

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """diffusers' true_cfg_scale (the CFG scale), the negative prompt, and the request's
        ControlNet units (a FlowControl of its own for each call)."""
        extra = self._length_and_control(request)
        return {"true_cfg_scale": float(request.cfg_scale),
                "negative_prompt": request.negative_prompt, **extra}


def qwenimage_capabilities(family: str) -> Capabilities:
    """What a Qwen-Image model of `family` takes (QwenImageModel.capabilities says what):
    the loaded model's, and the registry's before the weights load."""
    return Capabilities(family=family, latent_space="qwen-image", guidance="cfg",
                        samplers=tuple(FLOW_SAMPLERS), schedules=FLOW_SCHEDULES,
                        models="Qwen-Image models", step_cache=("fbc",), prompt_syntax=False,
                        textual_inversion=False, refiner=False,
                        control=family == "qwen-image",
                        hires_with_diffusers=False,
                        latent_masked_content=False, memory_modes=True,
                        control_on_host=True, hires_own_settings=True,
                        noise_multiplier=True)


def qwenimage_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a Qwen-Image model samples with where its defaults.json says nothing."""
    return QWENIMAGE_DEFAULTS


def load_qwenimage_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                         ) -> QwenImageModel:
    """A Qwen-Image diffusers folder, or a single-file transformer with `options.base` (a
    Qwen-Image folder giving the text encoder, tokenizer, VAE and scheduler), as a
    QwenImageModel; `options.text_encoders`: a Qwen2.5-VL text encoder file in place of the
    folder's; `options.defaults` (the folder's defaults.json) over `qwenimage_defaults`."""
    from .qwen_image import QwenImagePipeline

    path = Path(path)
    folder, transformer_file = base_folder(path, options.base, "Qwen-Image")
    pipe = QwenImagePipeline.from_pretrained(
        folder, dtype=options.dtype, device=options.device, variant=options.variant,
        transformer_file=transformer_file, text_encoder_files=list(options.text_encoders),
        offload=options.offload)
    defaults = options.defaults  # defaults.json over the family's (model_defaults)
    name = module_stem(path)  # as Forge names a file's model
    return QwenImageModel(pipe, family=family, name=name, defaults=defaults,
                          modules=pipe.modules)
