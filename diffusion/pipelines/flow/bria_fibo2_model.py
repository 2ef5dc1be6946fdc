"""`BriaFibo2Model`: Bria FIBO 2 behind the `generate(request)` every door calls (the flow
family's `FlowModel` with BriaFibo2Pipeline's own loop), and the registry's loader and
defaults for it.

The "diffusers" sampler alone (BriaFibo2Pipeline's Euler loop over its shifted sigmas); the
request's CFG scale is diffusers' `guidance_scale` (1 or below: the prompt's pass alone). An
empty negative prompt means the null caption FIBO 2 was trained with (diffusers' default). A
JSON caption is cleaned as FIBO 2's training cleaned captions; a plain prompt is taken as it
is. img2img is FIBO 2's editing, as Forge Neo maps img2img onto edit models: the init image
(and up to four reference pictures) the pictures to edit, the prompt the edit instruction (or
a JSON caption of the result with an "edit_instruction"), drawn at the request's width x
height from noise beside them; a mask, a strength and the hires fix are refused in one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...loaders.flow.text_encoder_file import module_stem
from ...models.step_cache import StepCache
from ...sampling.kdiffusion import DIFFUSERS
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..finite import pictures_uint8
from ..observer import Observer
from ..request import GenerationRequest
from .edit_refs import refuse_strength
from .flow_memory import MemoryLayout
from .flow_model import LLMFlowModel

__all__ = ["BRIA_FIBO2_DEFAULTS", "BriaFibo2Model", "bria_fibo2_capabilities",
           "bria_fibo2_defaults", "load_bria_fibo2_model"]

# BriaFibo2Pipeline's defaults: 30 steps at guidance 5
BRIA_FIBO2_DEFAULTS = SamplingDefaults(steps=30, sampler=DIFFUSERS, cfg_scale=5.0,
                                       why="diffusers' Bria FIBO 2 settings (its own loop)")


class BriaFibo2Model(LLMFlowModel):
    """A loaded Bria FIBO 2 pipeline (`family` "bria-fibo2", a `BriaFibo2Pipeline` as
    `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """Its own sampler ("diffusers"), CFG with a negative prompt, plain-text prompts with
        LoRA tags (diffusers/PEFT's names); txt2img and editing (img2img with up to five
        pictures); the memory modes (flow_memory); no hires fix, ControlNets, step cache,
        refiner or variation seeds."""
        return bria_fibo2_capabilities(self.family)

    @property
    def native_size(self) -> int:
        """1024: FIBO 2 draws about a megapixel (diffusers' default 1024 x 1024)."""
        return 1024

    @property
    def latent_channels(self) -> int:
        return int(self.pipe.vae.config["latent_channels"])

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: Qwen3-VL's language model (its `hidden_states_of`) with
        its vision tower where the folder has one (the token embeddings, the tower and the
        multimodal pass each bring the two in, as Qwen-Image-Edit's), the transformer's noise
        refiner and joint blocks (the latter run by `joint`, never by `forward`; the Perceiver
        stays with the transformer's rest), FLUX.2's VAE. `clean`, the t = 0 modulation made
        once a generation, brings the whole transformer in under --medvram."""
        pipe, transformer, encoder = self.pipe, self.pipe.transformer, self.pipe.text_encoder
        calls: tuple[tuple[Any, str], ...] = ((encoder, "hidden_states_of"),)
        readers: tuple[Any, ...] = (encoder,)
        if pipe.vision is not None:
            calls += ((encoder, "multimodal_hidden_states_of"), (encoder.embed_tokens, "forward"),
                      (pipe.vision, "forward"))
            readers += (pipe.vision,)
        return MemoryLayout(transformer=transformer,
                            blocks=(transformer.noise_refiner, transformer.layers),
                            text_encoders=readers, text_calls=calls, vae=pipe.vae,
                            block_calls=tuple((block, "joint") for block in transformer.layers),
                            transformer_calls=("clean",))

    def decode(self, latents: np.ndarray, request: GenerationRequest) -> list[np.ndarray]:
        """The pictures through FLUX.2's VAE."""
        return pictures_uint8(self.pipe.decode(latents), self.pipe.vae)

    def check(self, request: GenerationRequest, width: int, height: int) -> None:
        """The flow model's checks; an edit without a mask or a strength but the default."""
        super().check(request, width, height)
        if request.init_image is not None and request.mask is not None:
            raise ValueError("inpainting is not supported for Bria FIBO 2 yet; leave the mask "
                             "out (say the region in the edit instruction)")
        refuse_strength(request, "Bria FIBO 2 edits")

    def _diffusers(self, request: GenerationRequest, prompts: list[str], seed: int,
                   width: int, height: int, observer: Observer,
                   cache: StepCache | None = None) -> np.ndarray:
        """BriaFibo2Pipeline's loop: an edit of the init image (and the reference pictures)
        where one is given."""
        pictures = (None if request.init_image is None
                    else [request.init_image, *(request.references or [])])
        return self.pipe(prompts, height=height, width=width,  # type: ignore[no-any-return]
                         num_inference_steps=int(request.steps), seed=seed, rng=request.rng,
                         image=pictures, callback=observer.step, output_type="latent",
                         **self._guidance(request))

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """diffusers' guidance_scale (the CFG scale itself) and the negative prompt (None,
        the trained null caption, where empty)."""
        return {"guidance_scale": float(request.cfg_scale),
                "negative_prompt": request.negative_prompt or None}


def bria_fibo2_capabilities(family: str) -> Capabilities:
    """What a Bria FIBO 2 model takes (BriaFibo2Model.capabilities says what): the loaded
    model's, and the registry's before the weights load."""
    return Capabilities(family=family, latent_space="flux2", guidance="cfg", samplers=(),
                        schedules=None, models="Bria FIBO 2 models", step_cache=(),
                        prompt_syntax=False, textual_inversion=False, refiner=False,
                        control=False, variation_seeds=False, latent_upscale_resize=False,
                        hires=False, hires_with_diffusers=False, latent_masked_content=False,
                        memory_modes=True, references=5)


def bria_fibo2_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a Bria FIBO 2 model samples with where its defaults.json says nothing:
    diffusers' pipeline defaults."""
    return BRIA_FIBO2_DEFAULTS


def load_bria_fibo2_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                          ) -> BriaFibo2Model:
    """A Bria FIBO 2 diffusers folder as a BriaFibo2Model; `options.defaults` (the folder's
    defaults.json) over `bria_fibo2_defaults`. --base and --text-encoder files refused in
    one line (the folder holds every part)."""
    from .bria_fibo2 import BriaFibo2Pipeline

    if options.base is not None or options.text_encoders:
        raise ValueError("a Bria FIBO 2 folder holds every part: leave --base and "
                         "--text-encoder out")
    pipe = BriaFibo2Pipeline.from_pretrained(Path(path), dtype=options.dtype,
                                             device=options.device, variant=options.variant,
                                             offload=options.offload)
    return BriaFibo2Model(pipe, family=family, name=module_stem(Path(path)),
                          defaults=options.defaults or BRIA_FIBO2_DEFAULTS, modules=pipe.modules)
