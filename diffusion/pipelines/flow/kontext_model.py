"""`KontextModel`: FLUX.1 Kontext behind the `generate(request)` every door calls, the flow
family's `FlowModel` whose img2img reads the init image as the reference picture, and the
registry's detection, loader and defaults for it.

As Forge Neo maps img2img onto edit models, the request's init image is the picture to edit
and its prompt the instruction ("make it night"). The run starts from noise beside the
reference's tokens, so the denoising strength does not apply: only its default (or 1, what
the run amounts to) is taken. The reference is encoded at the init image's own size (after the
request's resize mode fits it to width x height), in whole 2x2 latent patches. Guidance is
FLUX.1 dev's distilled scale (`distilled_cfg_scale`); a CFG scale above 1 adds a
negative-prompt pass, as for FLUX. Without an init image it draws as FLUX.1 dev.

Inpainting (a mask) is diffusers' FluxKontextInpaintPipeline: the init image is the picture
inpainted (`image`), noised by the request's denoising strength, its unmasked part put back
after every step; the reference is the request's one further reference picture
(`references`, diffusers' `image_reference`: the CLI's --reference, the server's second
init image), or without one the init image itself. The mask goes the way of every flow
family's (mask blur, "Only masked", masked content; with the WebUI samplers the WebUI's
latent mask: diffusion.pipelines.flow.edit_refs.EditPasses).

The hires fix (WebUI samplers; not with a mask) is Forge's for flow models (flow_hires): the
first pass's picture upscaled, then img2img at the hires denoising strength through the same
model and its conditioning, as Forge's Kontext runs its second pass. The reference there is
the first pass's, unchanged: the init image fitted to width x height, encoded at that size,
not enlarged to the hires size (Forge's Kontext sizes its reference pictures by themselves,
not by the pass), so the picture the edit started from steers the details the second pass
adds as it steered the first.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ...loaders.flow.file import is_kontext_file
from ...loaders.flow.folder import flow_family
from ...loaders.flow.text_encoder_file import module_stem
from ...models.step_cache import StepCache
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..observer import Observer
from ..request import GenerationRequest
from .edit_refs import EditPasses, inpainting, refuse_strength
from .flow_model import FlowModel

__all__ = ["KONTEXT_DEFAULTS", "KontextModel", "kontext_capabilities", "kontext_defaults",
           "kontext_family", "load_kontext_model"]

KONTEXT_DEFAULTS = SamplingDefaults(
    steps=28, sampler="Euler", cfg_scale=1.0,
    why="diffusers' Kontext settings; its guidance is --distilled-cfg-scale")


class KontextModel(EditPasses, FlowModel):
    """A loaded FLUX.1 Kontext pipeline (`family` "flux-kontext", a `KontextPipeline` as
    `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """FLUX's (the WebUI samplers for flow models over the Simple schedule, distilled
        guidance, plain-text prompts with LoRA tags); the init image is the reference picture,
        or with a mask the picture inpainted, one further reference picture then its
        reference (2 pictures in all). The memory modes and variation seeds as FLUX's, First
        Block Cache (MagCache's and TeaCache's tables are FLUX.1 dev's, not Kontext's), the
        hires fix with the reference (the module's docstring); no refiner or control units;
        `check` refuses a denoising strength without a mask and a further reference without
        one."""
        return kontext_capabilities(super().capabilities)

    def check(self, request: GenerationRequest, width: int, height: int) -> None:
        """FlowModel's checks; without a mask, no strength but the default and no picture
        beside the init image."""
        super().check(request, width, height)
        if request.references and request.mask is None:
            raise ValueError("2 reference pictures: FLUX.1 Kontext reads one, the init image; "
                             "a further reference is for inpainting (with a mask, the init "
                             "image is the picture inpainted); give one picture, or a mask")
        refuse_strength(request, "FLUX.1 Kontext models")

    def _reference(self, request: GenerationRequest) -> dict[str, Any]:
        """The pipeline's reference keywords: the reference at its own size, the init image
        or, with a mask, the further reference where one is given (diffusers'
        `image_reference`; without one the picture inpainted is its own, as there)."""
        if request.init_image is None:
            return {}
        picture = request.references[0] if request.mask is not None and request.references \
            else request.init_image
        return {"image": picture, "auto_resize": False}

    def _diffusers(self, request: GenerationRequest, prompts: list[str], seed: int,
                   width: int, height: int, observer: Observer,
                   cache: StepCache | None = None) -> np.ndarray:
        if request.cfg_scale != 1:
            raise ValueError("FLUX.1 Kontext with the 'diffusers' sampler runs without CFG "
                             "(its guidance is distilled_cfg_scale): set cfg_scale 1, or pick "
                             "a WebUI sampler for true CFG")
        return self.pipe(prompts, height=height, width=width,  # type: ignore[no-any-return]
                         num_inference_steps=int(request.steps), seed=seed, rng=request.rng,
                         callback=observer.step, output_type="latent", cache=cache,
                         **self._guidance(request), **self._reference(request),
                         **inpainting(request))

    def guided_flow(self, request: GenerationRequest, prompts: list[str], width: int,
                    height: int, cache: StepCache | None = None
                    ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...],
                               float | None]:
        """FlowModel's guided flow with the reference picture in every pass (the negative
        prompt's too: `true_cfg`); `cache`: the generation's step cache (each prompt's flow
        a branch)."""
        return self.true_cfg(request, prompts, height=height, width=width, cache=cache,
                             **self._reference(request))

def kontext_capabilities(flux: Capabilities) -> Capabilities:
    """Kontext's Capabilities from FLUX.1's (flow_capabilities): KontextModel's, and the
    registry's before the weights load."""
    return replace(flux, step_cache=("fbc",), models="FLUX.1 Kontext models", references=2,
                   noise_multiplier=False, latent_upscale_resize=False,
                   hires_with_references=True)


def kontext_family(path: str | os.PathLike[str]) -> str | None:
    """"flux-kontext" for a FluxKontextPipeline diffusers folder or a FLUX.1 dev single file
    named Kontext's (BFL's `flux1-kontext-dev.safetensors`, city96's GGUFs:
    `is_kontext_file`), None for anything else."""
    kontext = flow_family(path) == "flux-kontext" if Path(path).is_dir() \
        else is_kontext_file(path)
    return "flux-kontext" if kontext else None


def kontext_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a Kontext model samples with where its defaults.json says nothing."""
    return KONTEXT_DEFAULTS


def load_kontext_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                       ) -> KontextModel:
    """A FluxKontextPipeline diffusers folder or a Kontext single file as a KontextModel,
    `options.text_encoders` files in place of the folder's (or, for a file, what it lacks: the
    VAE `ae.safetensors`, clip_l, t5xxl), `options.defaults` (the folder's defaults.json) over
    `kontext_defaults`."""
    from .kontext import KontextPipeline

    if options.base is not None:
        raise ValueError("a base model (--base) is for UNet-only GGUFs; FLUX.1 Kontext takes "
                         "its missing parts from --text-encoder files")
    path = Path(path)
    pipe = KontextPipeline.from_pretrained(path, dtype=options.dtype, device=options.device,
                                           variant=options.variant,
                                           text_encoder_files=list(options.text_encoders),
                                           offload=options.offload)
    defaults = options.defaults  # defaults.json over the family's (model_defaults)
    name = module_stem(path)  # as Forge
    return KontextModel(pipe, family=family, name=name, defaults=defaults,
                        modules=pipe.modules)
