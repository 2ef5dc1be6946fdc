"""`QwenImageEditModel`: Qwen-Image-Edit behind the `generate(request)` every door calls,
Qwen-Image's `FlowModel` whose img2img reads the init image as the picture to edit, and the
registry's detection, loader and defaults for it (Edit-2509 and later,
`QwenImageEditPlusPipeline` folders, with the init image as their one reference).

As Forge Neo maps img2img onto edit models, the request's init image is the reference and its
prompt the instruction ("make it night"). The run starts from noise beside the reference's
latent tokens, so the denoising strength does not apply: only its default (or 1) is taken.
The reference is resized to about a megapixel as diffusers' QwenImageEditPipeline does,
whatever the picture's size; the result is drawn at the request's width x height. The CFG
scale is diffusers' `true_cfg_scale` against the negative prompt ("" when none is given), as
for Qwen-Image. An edit model needs its picture: txt2img is refused. No inpainting or hires
fix yet; several references (an Edit Plus model's) only from Python yet.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from ...loaders.qwen_image import qwenimage_edit_family
from ...models.step_cache import StepCache
from ...sampling.model_sampling import FlowSchedule
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..observer import Observer
from ..request import GenerationRequest
from .flow_sampling import sample_flow
from .qwen_image_model import QWENIMAGE_DEFAULTS, QwenImageModel

__all__ = ["QwenImageEditModel", "load_qwenimage_edit_model", "qwenimage_edit_defaults",
           "qwenimage_edit_family"]

# the request's own denoising strength: what a client sends when it sets none
_DEFAULT_STRENGTH = next(f.default for f in fields(GenerationRequest) if f.name == "strength")


class QwenImageEditModel(QwenImageModel):
    """A loaded Qwen-Image-Edit pipeline (`family` "qwen-image-edit", a
    `QwenImageEditPipeline` as `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """Qwen-Image's; the init image is the picture to edit."""
        return replace(super().capabilities, models="Qwen-Image-Edit models")

    def check(self, request: GenerationRequest, width: int, height: int) -> None:
        """Qwen-Image's checks; an init image, and no strength but the default."""
        super().check(request, width, height)
        if request.init_image is None:
            raise ValueError("Qwen-Image-Edit edits a picture: give it as the init image "
                             "(img2img's init_images, the CLI's --init-image) and say the "
                             "edit in the prompt")
        strength = float(request.strength)
        if strength not in (_DEFAULT_STRENGTH, 1.0):
            raise ValueError(f"denoising strength {strength:g} does not apply to "
                             "Qwen-Image-Edit (it draws from noise beside the reference "
                             "picture); leave --strength out")

    def _diffusers(self, request: GenerationRequest, prompts: list[str], seed: int,
                   width: int, height: int, observer: Observer,
                   cache: StepCache | None = None) -> np.ndarray:
        return self.pipe(prompts, image=request.init_image,  # type: ignore[no-any-return]
                         height=height, width=width, num_inference_steps=int(request.steps),
                         seed=seed, rng=request.rng, callback=observer.step,
                         output_type="latent", cache=cache, **self._guidance(request))

    def guided_flow(self, request: GenerationRequest, prompts: list[str], width: int,
                    height: int, cache: StepCache | None = None
                    ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...],
                               float | None]:
        """Qwen-Image's guided flow with the reference picture in every pass."""
        return self.pipe.velocity(  # type: ignore[no-any-return]
            prompts, height=height, width=width, cache=cache, image=request.init_image,
            **self._guidance(request))

    def _webui(self, request: GenerationRequest, label: str, prompts: list[str],
               seeds: list[int], width: int, height: int, observer: Observer,
               cache: StepCache | None) -> np.ndarray:
        """A WebUI sampler from noise (the init image is the reference, not the start)."""
        flow, shape, mu = self.guided_flow(request, prompts, width, height, cache)
        return sample_flow(flow, label, FlowSchedule(self.pipe.scheduler_config, mu=mu),
                           int(request.steps), seeds=seeds, rng=request.rng, shape=shape,
                           options=request.sampler_options,
                           eta_noise_seed_delta=int(request.eta_noise_seed_delta),
                           callback=observer.step)


def qwenimage_edit_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a Qwen-Image-Edit model samples with where its defaults.json says nothing:
    QwenImageEditPipeline's 50 steps at true_cfg_scale 4."""
    return replace(QWENIMAGE_DEFAULTS, why="diffusers' Qwen-Image-Edit settings; CFG is its "
                   "true_cfg_scale")


def load_qwenimage_edit_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                              ) -> QwenImageEditModel:
    """A QwenImageEditPipeline or QwenImageEditPlusPipeline (Edit-2509 and later: one
    reference through the init image) diffusers folder as a QwenImageEditModel,
    `options.defaults`
    (the folder's defaults.json) over `qwenimage_edit_defaults`."""
    from .qwen_image_edit import QwenImageEditPipeline
    from .qwen_image_edit_plus import QwenImageEditPlusPipeline

    kind = QwenImageEditPlusPipeline if family == "qwen-image-edit-plus" else (
        QwenImageEditPipeline)
    if options.base is not None or options.text_encoders:
        raise ValueError("a Qwen-Image-Edit folder holds every part itself; leave --base and "
                         "--text-encoder out")
    path = Path(path)
    pipe = kind.from_pretrained(path, dtype=options.dtype, device=options.device,
                                variant=options.variant)
    return QwenImageEditModel(pipe, family=family, name=path.name, defaults=options.defaults,
                              modules=pipe.modules)

