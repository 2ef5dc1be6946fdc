"""`BriaFiboModel`: Bria FIBO behind the `generate(request)` every door calls (the flow family's
`FlowModel` with BriaFiboPipeline's own loop), and the registry's loader and defaults for it.

The "diffusers" sampler alone (BriaFiboPipeline's Euler loop over its shifted sigmas); the
request's CFG scale is diffusers' `guidance_scale` (1 or below: the prompt's pass alone),
the negative prompt "" where none is given. txt2img only: diffusers has no FIBO img2img. The
prompt is given to SmolLM3 as it is: FIBO was trained on long structured JSON captions,
which Bria's VLM writes from a short prompt outside diffusers' pipeline (and this one); a
plain prompt is taken too, though Bria says the model is not meant for free-form text.

FIBO Edit (`BriaFiboEditModel`, "bria-fibo-edit") is img2img as Forge Neo maps it onto edit
models: the init image the picture to edit, the prompt the edit JSON caption, drawn at the
request's width x height; txt2img, a mask, a strength and the hires fix are refused in one
line.
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

__all__ = ["BRIA_FIBO_DEFAULTS", "BriaFiboEditModel", "BriaFiboModel", "bria_fibo_capabilities",
           "bria_fibo_defaults", "load_bria_fibo_model"]

# BriaFiboPipeline's defaults: 30 steps at guidance 5
BRIA_FIBO_DEFAULTS = SamplingDefaults(steps=30, sampler=DIFFUSERS, cfg_scale=5.0,
                                      why="diffusers' Bria FIBO settings (its own loop)")


class BriaFiboModel(LLMFlowModel):
    """A loaded Bria FIBO pipeline (`family` "bria-fibo", a `BriaFiboPipeline` as `pipe`)."""

    latent_patch = 1  # a token per latent pixel: sides in multiples of 16, as diffusers checks

    @property
    def capabilities(self) -> Capabilities:
        """Its own sampler ("diffusers"), CFG with a negative prompt, plain-text prompts with
        LoRA tags (diffusers/PEFT's names), the memory modes (flow_memory); txt2img only, no
        hires fix, ControlNets, step cache, refiner or variation seeds."""
        return bria_fibo_capabilities(self.family)

    @property
    def native_size(self) -> int:
        """1024: FIBO draws about a megapixel (diffusers' default 1024 x 1024)."""
        return 1024

    @property
    def latent_channels(self) -> int:
        return int(self.pipe.vae.config["z_dim"])

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: SmolLM3 (its `hidden_states_of`), the transformer's
        double- and single-stream blocks, Wan 2.2's VAE. The SmolLM3 states each block reads
        are computed with the prompt, before the transformer runs, so SmolLM3 need not stay;
        the blocks' caption projections are small and stay with the transformer's rest."""
        pipe, transformer = self.pipe, self.pipe.transformer
        return MemoryLayout(transformer=transformer,
                            blocks=(transformer.transformer_blocks,
                                    transformer.single_transformer_blocks),
                            text_encoders=(pipe.text_encoder,),
                            text_calls=((pipe.text_encoder, "hidden_states_of"),), vae=pipe.vae)

    def decode(self, latents: np.ndarray, request: GenerationRequest) -> list[np.ndarray]:
        """The pictures through Wan 2.2's VAE (one frame each)."""
        return pictures_uint8(self.pipe.decode(latents), self.pipe.vae)

    def begin_decode(self, request: GenerationRequest, shape: tuple[int, ...]) -> None:
        """Nothing ahead: Wan's VAE builds its kernels as it decodes."""

    def _diffusers(self, request: GenerationRequest, prompts: list[str], seed: int,
                   width: int, height: int, observer: Observer,
                   cache: StepCache | None = None) -> np.ndarray:
        """BriaFiboPipeline's loop; an init image refused in one line."""
        if request.init_image is not None:
            raise ValueError("Bria FIBO draws from text alone (diffusers' BriaFiboPipeline "
                             "has no img2img): leave the init image out")
        return self.pipe(prompts, height=height, width=width,  # type: ignore[no-any-return]
                         num_inference_steps=int(request.steps), seed=seed, rng=request.rng,
                         callback=observer.step, output_type="latent",
                         **self._guidance(request))

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """diffusers' guidance_scale (the CFG scale itself) and the negative prompt."""
        return {"guidance_scale": float(request.cfg_scale),
                "negative_prompt": request.negative_prompt or ""}


class BriaFiboEditModel(BriaFiboModel):
    """A loaded FIBO Edit pipeline (`family` "bria-fibo-edit", a `BriaFiboEditPipeline` as
    `pipe`): the init image is the picture to edit."""

    def check(self, request: GenerationRequest, width: int, height: int) -> None:
        """FIBO's checks; an init image, no mask, and no strength but the default."""
        super().check(request, width, height)
        if request.init_image is None:
            raise ValueError("FIBO Edit edits a picture: give it as the init image (img2img's "
                             "init_images, the CLI's --init-image) and the edit JSON caption "
                             "as the prompt")
        if request.mask is not None:
            raise ValueError("inpainting is not supported for FIBO Edit yet; leave the mask "
                             "out (say the region in the edit instruction)")
        refuse_strength(request, "FIBO Edit models")

    def _diffusers(self, request: GenerationRequest, prompts: list[str], seed: int,
                   width: int, height: int, observer: Observer,
                   cache: StepCache | None = None) -> np.ndarray:
        """BriaFiboEditPipeline's loop on the init image."""
        return self.pipe(prompts, image=request.init_image,  # type: ignore[no-any-return]
                         height=height, width=width, num_inference_steps=int(request.steps),
                         seed=seed, rng=request.rng, callback=observer.step,
                         output_type="latent", **self._guidance(request))


def bria_fibo_capabilities(family: str) -> Capabilities:
    """What a Bria FIBO model takes (BriaFiboModel.capabilities says what), FIBO Edit's
    ("bria-fibo-edit") the init image as the picture to edit: the loaded model's, and the
    registry's before the weights load."""
    edit = family == "bria-fibo-edit"
    return Capabilities(family=family, latent_space="wan2.2", guidance="cfg", samplers=(),
                        schedules=None, models="FIBO Edit models" if edit else "Bria FIBO models",
                        step_cache=(), prompt_syntax=False, textual_inversion=False,
                        refiner=False, control=False, variation_seeds=False,
                        latent_upscale_resize=False, hires=False, hires_with_diffusers=False,
                        latent_masked_content=False, memory_modes=True,
                        references=1 if edit else 0)


def bria_fibo_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a Bria FIBO model samples with where its defaults.json says nothing: diffusers'
    pipeline defaults."""
    return BRIA_FIBO_DEFAULTS


def load_bria_fibo_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                         ) -> BriaFiboModel:
    """A Bria FIBO (or FIBO Edit) diffusers folder as a BriaFiboModel (a BriaFiboEditModel);
    `options.defaults` (the folder's defaults.json) over `bria_fibo_defaults`. --base and
    --text-encoder files refused in one line (the folder holds every part)."""
    from .bria_fibo import BriaFiboPipeline
    from .bria_fibo_edit import BriaFiboEditPipeline

    if options.base is not None or options.text_encoders:
        raise ValueError("a Bria FIBO folder holds every part: leave --base and "
                         "--text-encoder out")
    edit = family == "bria-fibo-edit"
    pipe = (BriaFiboEditPipeline if edit else BriaFiboPipeline).from_pretrained(
        Path(path), dtype=options.dtype, device=options.device, variant=options.variant,
        offload=options.offload)
    return (BriaFiboEditModel if edit else BriaFiboModel)(
        pipe, family=family, name=module_stem(Path(path)),
        defaults=options.defaults or BRIA_FIBO_DEFAULTS, modules=pipe.modules)
