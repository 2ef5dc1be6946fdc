"""`ZImageOmniModel`: Z-Image Omni behind the `generate(request)` every door calls, Z-Image's
`FlowModel` whose img2img reads its pictures as condition pictures, and the registry's
detection, loader and capabilities for it.

As Forge Neo maps img2img onto edit models, the request's init image (fitted to width x
height by the resize mode) and its further `references` (the CLI's --reference, the server's
init_images beyond the first) are the condition pictures, in order, and the prompt says what
to draw from them ("make it night", "the cat of the first picture in the room of the
second"). The run starts from noise beside them, so the denoising strength does not apply:
only its default (or 1) is taken. Without an init image it draws from the prompt alone. The
CFG scale is Z-Image's (1: no negative pass; above 1 diffusers' guidance_scale of the scale
less 1, the negative pass beside the same pictures). The hires fix (WebUI samplers) keeps the
pictures in its second pass, as FLUX.2's. The memory modes move SigLIP2's tower with the
text encoder. First Block Cache runs as on Z-Image (the main blocks cached, the refiners
always run; CFG's rows one call sharing one cache). Not yet: inpainting (diffusers has no Omni
inpaint pipeline) and ControlNet units.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ...loaders.flow.text_encoder_file import module_stem
from ...models.step_cache import StepCache
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..observer import Observer
from ..picture_limits import FLUX2_PROCESSOR
from ..request import GenerationRequest
from .edit_refs import EditPasses, reference_pictures, refuse_strength
from .flow_memory import MemoryLayout
from .z_image_model import ZImageModel, zimage_capabilities, zimage_defaults

__all__ = ["ZImageOmniModel", "load_zimage_omni_model", "zimage_omni_capabilities",
           "zimage_omni_defaults"]


class ZImageOmniModel(EditPasses, ZImageModel):
    """A loaded Z-Image Omni pipeline (`family` "z-image-omni", a `ZImageOmniPipeline` as
    `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """Z-Image's WebUI samplers, CFG and prompts and memory modes; any number of
        condition pictures (the init image the first), the hires fix beside them, Z-Image's
        First Block Cache; no inpainting or ControlNet units yet."""
        return zimage_omni_capabilities(self.family)

    def memory_layout(self) -> MemoryLayout:
        """Z-Image's, with SigLIP2's tower in the text encoder's unit (its `forward` brings
        the two in) and the SigLIP refiner's blocks streamed with the others."""
        pipe, transformer = self.pipe, self.pipe.transformer
        return replace(super().memory_layout(),
                       blocks=(transformer.noise_refiner, transformer.context_refiner,
                               transformer.siglip_refiner, transformer.layers),
                       text_encoders=(pipe.text_encoder, pipe.siglip),
                       text_calls=((pipe.text_encoder, "hidden_states_of"),
                                   (pipe.siglip, "forward")))

    def check(self, request: GenerationRequest, width: int, height: int) -> None:
        """Z-Image's checks; no mask, and no strength but the default with pictures."""
        super().check(request, width, height)
        if request.mask is not None:
            raise ValueError("inpainting (a mask): not supported for Z-Image Omni models yet; "
                             "leave the mask out (the init image is then a condition picture)")
        refuse_strength(request, "Z-Image Omni models")

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """diffusers' guidance_scale (the CFG scale less 1), the negative prompt and the
        condition pictures."""
        length = ({} if self.max_sequence_length is None
                  else {"max_sequence_length": self.max_sequence_length})
        return {"guidance_scale": max(float(request.cfg_scale) - 1.0, 0.0),
                "negative_prompt": request.negative_prompt,
                "image": reference_pictures(request), **length}

    def _diffusers(self, request: GenerationRequest, prompts: list[str], seed: int,
                   width: int, height: int, observer: Observer,
                   cache: StepCache | None = None) -> np.ndarray:
        """ZImageOmniPipeline's own loop, from noise beside the pictures."""
        return self.pipe(prompts, height=height, width=width,  # type: ignore[no-any-return]
                         num_inference_steps=int(request.steps), seed=seed, rng=request.rng,
                         callback=observer.step, output_type="latent", cache=cache,
                         **self._guidance(request))

    def guided_flow(self, request: GenerationRequest, prompts: list[str], width: int,
                    height: int, cache: StepCache | None = None
                    ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...],
                               float | None]:
        """The guided flow with the condition pictures in every pass."""
        return self.pipe.velocity(  # type: ignore[no-any-return]
            prompts, height=height, width=width, cache=cache, **self._guidance(request))


def zimage_omni_capabilities(family: str) -> Capabilities:
    """Z-Image's (zimage_capabilities) with condition pictures: ZImageOmniModel's, and the
    registry's before the weights load."""
    return replace(zimage_capabilities(family), models="Z-Image Omni models", references=None,
                   control=False, control_on_host=False,
                   noise_multiplier=False, latent_upscale_resize=False,
                   hires_with_references=True, picture_limits=FLUX2_PROCESSOR)


def zimage_omni_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """Z-Image's (`zimage_defaults`): a Turbo's by its name, else ZImageOmniPipeline's 50
    steps at guidance_scale 5 (CFG 6)."""
    return zimage_defaults(path, family)


def load_zimage_omni_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                           ) -> ZImageOmniModel:
    """A ZImageOmniPipeline diffusers folder as a ZImageOmniModel; `options.defaults` (the
    folder's defaults.json) over `zimage_omni_defaults`."""
    from .z_image_omni import ZImageOmniPipeline

    if options.base is not None or options.text_encoders:
        raise ValueError("Z-Image Omni loads from its diffusers folder alone: leave --base and "
                         "--text-encoder out")
    path = Path(path)
    pipe = ZImageOmniPipeline.from_pretrained(path, dtype=options.dtype, device=options.device,
                                              variant=options.variant, offload=options.offload)
    return ZImageOmniModel(pipe, family=family, name=module_stem(path),
                           defaults=options.defaults, modules=pipe.modules)
