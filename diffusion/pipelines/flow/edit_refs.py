"""What the edit models (FLUX.1 Kontext, Qwen-Image-Edit and its Plus versions, FLUX.2) share
behind `generate(request)`: Forge Neo's mapping of img2img onto them, where the init image is
the first reference picture and `request.references` the others, in order; the denoising
strength that mapping leaves without a meaning; a WebUI sampler run from noise beside the
references (the init image is not the start); and inpainting, where a mask makes the init
image the picture inpainted at the denoising strength, as diffusers' FluxKontextInpaintPipeline,
Flux2KleinInpaintPipeline and QwenImageEditInpaintPipeline draw it (`image` noised by
`strength`, the unmasked part put back after every step) while the references still steer
the flow (each family says which: Kontext's `image_reference`, klein's init image and
further references, Qwen-Image-Edit's picture itself).

    pictures = reference_pictures(request)         # [] for txt2img
    refuse_strength(request, "FLUX.2 klein models")
    latents = pipe(..., **inpainting(request))     # the "diffusers" sampler's start
    class Flux2Model(EditPasses, LLMFlowModel)     # the WebUI samplers: from noise, or inpaint
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any, Protocol

import numpy as np

from ...models.step_cache import StepCache
from ...sampling.kdiffusion_pass import WebUISeeds
from ...sampling.model_sampling import FlowSchedule
from ..observer import Observer
from ..request import GenerationRequest
from .flow_passes import FlowModelPasses
from .flow_sampling import resized, sample_flow
from .flow_schedule import scheduled_flow

__all__ = ["DEFAULT_STRENGTH", "EditPasses", "PictureEditPasses", "inpainting",
           "reference_pictures", "refuse_strength", "sample_from_noise"]

# the request's own denoising strength: what a client sends when it sets none
DEFAULT_STRENGTH = next(f.default for f in fields(GenerationRequest) if f.name == "strength")


class EditModel(Protocol):
    """What `sample_from_noise` needs of a model: its pipeline (whose scheduler config it
    reads), its guided flow and its decoder's kernels begun ahead (FlowModel.begin_decode)."""

    pipe: Any

    def guided_flow(self, request: GenerationRequest, prompts: list[str], width: int,
                    height: int, cache: StepCache | None = None
                    ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...],
                               float | None]: ...

    def begin_decode(self, request: GenerationRequest, shape: tuple[int, ...]) -> None: ...


def reference_pictures(request: GenerationRequest) -> list[Any]:
    """The request's reference pictures: its init image, then its further references; none
    without an init image."""
    if request.init_image is None:
        return []
    return [request.init_image, *request.references]


def refuse_strength(request: GenerationRequest, models: str) -> None:
    """ValueError in one line for a denoising strength other than the default (or 1, what
    the run amounts to) with reference pictures and no mask: the run starts from noise."""
    strength = float(request.strength)
    if (request.init_image is not None and request.mask is None
            and strength not in (DEFAULT_STRENGTH, 1.0)):
        raise ValueError(f"denoising strength {strength:g}: not supported for {models} "
                         "without a mask (they draw from noise beside the reference "
                         "pictures); leave --strength out, or give a mask to inpaint")


def inpainting(request: GenerationRequest) -> dict[str, Any]:
    """The edit pipeline's inpainting keywords for the "diffusers" sampler: with a mask, the
    init image as the picture inpainted (`init_image`), the mask and the strength; none
    otherwise (the run starts from noise)."""
    if request.mask is None:
        return {}
    return {"init_image": request.init_image, "mask_image": request.mask,
            "strength": float(request.strength)}


class EditPasses(FlowModelPasses):
    """An edit model's WebUI-sampler pass (before FlowModel in its bases): from noise beside
    the references (`sample_from_noise`), or with a mask FlowModelPasses' inpainting, the one
    every flow family runs (the init image's latents noised to the strength, the WebUI's
    latent mask and masked content, the kept part put back after every step), along the
    model's guided flow with its references inside."""

    def _webui(self, request: GenerationRequest, label: str, prompts: list[str],
               seeds: WebUISeeds, width: int, height: int, observer: Observer,
               cache: StepCache | None) -> np.ndarray:
        if request.mask is not None:
            return super()._webui(request, label, prompts, seeds, width, height, observer,
                                  cache)
        return sample_from_noise(self, request, label, prompts, seeds, width, height,
                                 observer, cache)


class PictureEditPasses(EditPasses):
    """EditPasses of a model whose pipeline reads the picture to edit as `image`, in its own
    loop (the "diffusers" sampler, inpainting with a mask) and in its guided flow (`velocity`,
    every pass): Qwen-Image-Edit, Kandinsky 5's editing model. `_image`: what it reads, the
    init image unless the model says otherwise."""

    def _image(self, request: GenerationRequest) -> Any:
        return request.init_image

    def _diffusers(self, request: GenerationRequest, prompts: list[str], seed: int,
                   width: int, height: int, observer: Observer,
                   cache: StepCache | None = None) -> np.ndarray:
        return self.pipe(prompts, image=self._image(request),  # type: ignore[no-any-return]
                         height=height, width=width, num_inference_steps=int(request.steps),
                         seed=seed, rng=request.rng, callback=observer.step,
                         output_type="latent", cache=cache, **self._guidance(request),
                         **inpainting(request))

    def guided_flow(self, request: GenerationRequest, prompts: list[str], width: int,
                    height: int, cache: StepCache | None = None
                    ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...],
                               float | None]:
        """The model's guided flow with the picture to edit in every pass."""
        return self.pipe.velocity(  # type: ignore[no-any-return]
            prompts, height=height, width=width, cache=cache, image=self._image(request),
            **self._guidance(request))


def sample_from_noise(model: EditModel, request: GenerationRequest, label: str,
                      prompts: list[str], seeds: WebUISeeds, width: int, height: int,
                      observer: Observer, cache: StepCache | None) -> np.ndarray:
    """A WebUI sampler over the Simple schedule from noise along the model's guided flow
    (the references inside it), each picture from its own seed."""
    flow, shape, mu = scheduled_flow(model, request, prompts, width, height, cache,
                                     steps=int(request.steps))
    model.begin_decode(request, shape)  # the prompt encoded, the first step not yet
    return sample_flow(flow, label, FlowSchedule(model.pipe.scheduler_config, mu=mu),
                       int(request.steps), seeds=resized(seeds, request, shape, width, height),
                       rng=request.rng, shape=shape, options=request.sampler_options,
                       callback=observer.step, denoised=observer.on_denoised)
