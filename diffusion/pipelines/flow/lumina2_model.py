"""`Lumina2Model`: Lumina Image 2.0 (and fine-tunes such as Neta Lumina) behind the
`generate(request)` every door calls, the flow family's `FlowModel` with Lumina 2's guidance,
and the registry's loader and defaults for it.

The request's CFG scale is diffusers' `guidance_scale` as it is (`neg + cfg * (pos - neg)`;
1 or below runs the prompt's pass alone). CFG truncation and normalisation take the model
card's settings, `cfg_trunc_ratio` 0.25 (the negative pass for the first quarter of the
steps) and `cfg_normalization` on: no other family has flags for them, so they are the
family's, not the request's. The "diffusers" sampler runs Lumina2Pipeline's own loop; the
WebUI's samplers for flow models run over the shifted Simple schedule (truncation by noise
level: lumina2_guidance), from noise or an init image (img2img, inpainting, the hires fix).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ...loaders.flow.text_encoder_file import module_stem
from ...models.step_cache import StepCache
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..request import GenerationRequest
from .flow_memory import MemoryLayout
from .flow_model import LLMFlowModel
from .flow_sampling import FLOW_SAMPLERS, FLOW_SCHEDULES
from .start import base_folder

__all__ = ["LUMINA2_CFG", "LUMINA2_DEFAULTS", "Lumina2Model", "load_lumina2_model",
           "lumina2_capabilities", "lumina2_defaults"]

# Lumina-Image-2.0's card: 50 steps at guidance 4, 1024 x 1024 (the transformer's
# sample_size)
LUMINA2_DEFAULTS = SamplingDefaults(steps=50, sampler="Euler", cfg_scale=4.0,
                                    why="Lumina-Image-2.0's card settings")
# the card's CFG truncation and normalisation (diffusers' defaults are 1.0 and on)
LUMINA2_CFG: dict[str, Any] = {"cfg_trunc_ratio": 0.25, "cfg_normalization": True}


class Lumina2Model(LLMFlowModel):
    """A loaded Lumina 2 pipeline (`family` "lumina2", a `Lumina2Pipeline` as `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """The WebUI samplers defined for flow models over the Simple schedule, CFG with a
        negative prompt, plain-text prompts with LoRA tags, img2img and inpainting, the hires
        fix, the memory modes (flow_memory), variation seeds; no ControlNets, no step cache,
        no refiner."""
        return lumina2_capabilities(self.family)

    @property
    def native_size(self) -> int:
        """The side the transformer was trained at: its sample_size latents (1024 pixels)."""
        return int(self.pipe.default_size)

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: Gemma 2 (its `hidden_states_of`), the transformer's
        refiner and joint blocks, the VAE."""
        pipe, transformer = self.pipe, self.pipe.transformer
        return MemoryLayout(transformer=transformer,
                            blocks=(transformer.noise_refiner, transformer.context_refiner,
                                    transformer.layers),
                            text_encoders=(pipe.text_encoder,),
                            text_calls=((pipe.text_encoder, "hidden_states_of"),), vae=pipe.vae)

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """diffusers' guidance_scale (the CFG scale), the negative prompt, the family's CFG
        truncation and normalisation, the prompt's length where set."""
        return {"guidance_scale": float(request.cfg_scale),
                "negative_prompt": request.negative_prompt, **LUMINA2_CFG,
                **self._length_and_control(request)}

    def guided_flow(self, request: GenerationRequest, prompts: list[str], width: int,
                    height: int, cache: StepCache | None = None
                    ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...],
                               float | None]:
        """The guided flow of `prompts` for a WebUI sampler: CFG truncated at the noise level
        where diffusers' schedule of the request's steps stops guiding."""
        return self.pipe.velocity(  # type: ignore[no-any-return]
            prompts, height=height, width=width, cache=cache,
            num_inference_steps=int(request.steps), **self._guidance(request))


def lumina2_capabilities(family: str) -> Capabilities:
    """What a Lumina 2 model takes (Lumina2Model.capabilities says what): the loaded model's,
    and the registry's before the weights load."""
    return Capabilities(family=family, latent_space="flux", guidance="cfg",
                        samplers=tuple(FLOW_SAMPLERS), schedules=FLOW_SCHEDULES,
                        models="Lumina 2 models", step_cache=(), prompt_syntax=False,
                        textual_inversion=False, refiner=False, control=False,
                        hires_with_diffusers=False, latent_masked_content=False,
                        memory_modes=True, hires_own_settings=True, noise_multiplier=True)


def lumina2_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a Lumina 2 model samples with where its defaults.json says nothing: the card's."""
    return LUMINA2_DEFAULTS


def load_lumina2_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                       ) -> Lumina2Model:
    """A Lumina 2 diffusers folder, or a single-file transformer with `options.base` (a
    Lumina 2 folder giving Gemma 2, the tokenizer, VAE and scheduler), as a Lumina2Model;
    `options.text_encoders`: a Gemma 2 file in place of the folder's; `options.defaults`
    (the folder's defaults.json) over `lumina2_defaults`."""
    from .lumina2 import Lumina2Pipeline

    path = Path(path)
    folder, transformer_file = base_folder(path, options.base, "Lumina 2",
                                           parts="Gemma 2, tokenizer, VAE and scheduler")
    pipe = Lumina2Pipeline.from_pretrained(folder, dtype=options.dtype, device=options.device,
                                           variant=options.variant,
                                           transformer_file=transformer_file,
                                           text_encoder_files=list(options.text_encoders),
                                           offload=options.offload)
    return Lumina2Model(pipe, family=family, name=module_stem(path), defaults=options.defaults,
                        modules=pipe.modules)
