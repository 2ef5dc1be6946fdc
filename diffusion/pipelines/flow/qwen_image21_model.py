"""`QwenImage21Model`: Qwen-Image 2.1 behind the `generate(request)` every door calls, the flow
family's `FlowModel` with its true CFG, and the registry's loader and defaults for it.

The request's CFG scale is diffusers' `true_cfg_scale`: 1 is no guidance, above 1 a
negative-prompt pass (the request's negative prompt, "" when none is given) combined as
`neg + cfg * (pos - neg)`, as QwenImage21Pipeline does (no rescale). The "diffusers" sampler
runs QwenImage21Pipeline's own loop over the author's sigmas; the WebUI's samplers for flow
models run over the shifted Simple schedule, from noise or an init image.
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

__all__ = ["QWENIMAGE21_DEFAULTS", "QwenImage21Model", "load_qwenimage21_model",
           "qwenimage21_capabilities", "qwenimage21_defaults"]

# QwenImage21Pipeline's own defaults: 40 steps, true_cfg_scale 1 (no negative pass)
QWENIMAGE21_DEFAULTS = SamplingDefaults(
    steps=40, sampler="Euler", cfg_scale=1.0,
    why="diffusers' Qwen-Image 2.1 settings; CFG is its true_cfg_scale")


class QwenImage21Model(LLMFlowModel):
    """A loaded Qwen-Image 2.1 pipeline (`family` "qwen-image-2.1", a `QwenImage21Pipeline`
    as `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """The WebUI samplers defined for flow models over the Simple schedule, true CFG with
        a negative prompt, plain-text prompts with LoRA tags, img2img and inpainting, the
        hires fix with the WebUI samplers, variation seeds, the memory modes (flow_memory),
        First Block Cache (MagCache's and TeaCache's tables are FLUX's); not yet: condition
        images (the edit), ControlNets, a refiner."""
        return qwenimage21_capabilities(self.family)

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: Qwen3-VL (its `hidden_states`, which encode_t2i calls,
        and `hidden_states_of` under it), the transformer (also brought in by `prefix`, which
        runs its blocks over the prompt once a prompt) and its blocks (run by their `prefix`
        and `image`, never by `forward`), the VAE."""
        pipe, transformer = self.pipe, self.pipe.transformer
        blocks = transformer.transformer_blocks
        return MemoryLayout(transformer=transformer, blocks=(blocks,),
                            text_encoders=(pipe.text_encoder,),
                            text_calls=((pipe.text_encoder, "hidden_states"),
                                        (pipe.text_encoder, "hidden_states_of")),
                            vae=pipe.vae,
                            block_calls=tuple((block, method) for block in blocks
                                              for method in ("prefix", "image")),
                            transformer_calls=("prefix",))

    @property
    def latent_channels(self) -> int:
        return int(self.pipe.vae.config["z_dim"])

    def encode_init(self, pixels: np.ndarray, generator: Any) -> np.ndarray:
        """The init image's latents through the 2.1 VAE (`QwenImage21Pipeline.encode_image`)."""
        return self.pipe.encode_image(pixels, generator)  # type: ignore[no-any-return]

    def decode(self, latents: np.ndarray, request: GenerationRequest) -> list[np.ndarray]:
        """The pictures through the 2.1 VAE."""
        return pictures_uint8(self.pipe.decode(latents), self.pipe.vae)

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """diffusers' true_cfg_scale (the CFG scale) and the negative prompt."""
        return {"true_cfg_scale": float(request.cfg_scale),
                "negative_prompt": request.negative_prompt}


def qwenimage21_capabilities(family: str) -> Capabilities:
    """What a Qwen-Image 2.1 model takes (QwenImage21Model.capabilities says what): the
    loaded model's, and the registry's before the weights load."""
    return Capabilities(family=family, latent_space="qwen-image-2.1", guidance="cfg",
                        samplers=tuple(FLOW_SAMPLERS), schedules=FLOW_SCHEDULES,
                        models="Qwen-Image 2.1 models", step_cache=("fbc",), prompt_syntax=False,
                        textual_inversion=False, refiner=False, control=False,
                        hires_with_diffusers=False, latent_masked_content=False,
                        memory_modes=True, noise_multiplier=True)


def qwenimage21_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a Qwen-Image 2.1 model samples with where its defaults.json says nothing:
    diffusers' 40 steps, or as many as the author's sigmas in model_index.json."""
    index = Path(path) / "model_index.json"
    sigmas = read_json(index).get("sample_sigmas") if index.is_file() else None
    if isinstance(sigmas, list) and sigmas:
        return SamplingDefaults(steps=len(sigmas), sampler="Euler", cfg_scale=1.0,
                                why="the model's sample_sigmas; CFG is its true_cfg_scale")
    return QWENIMAGE21_DEFAULTS


def load_qwenimage21_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                           ) -> QwenImage21Model:
    """A Qwen-Image 2.1 diffusers folder as a QwenImage21Model; `options.defaults` (the
    folder's defaults.json) over `qwenimage21_defaults`. A single file, a --base or a
    --text-encoder file is refused in one line (only folders are read yet)."""
    from .qwen_image21 import QwenImage21Pipeline

    path = Path(path)
    if options.base is not None or options.text_encoders:
        raise ValueError("Qwen-Image 2.1 loads from its diffusers folder alone: drop --base "
                         "and --text-encoder")
    pipe = QwenImage21Pipeline.from_pretrained(path, dtype=options.dtype,
                                               device=options.device, variant=options.variant,
                                               offload=options.offload)
    return QwenImage21Model(pipe, family=family, name=module_stem(path),
                            defaults=options.defaults, modules=pipe.modules)
