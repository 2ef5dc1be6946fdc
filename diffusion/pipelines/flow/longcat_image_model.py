"""`LongCatImageModel`: LongCat-Image behind the `generate(request)` every door calls, the flow
family's `FlowModel` with LongCat-Image's guidance, and the registry's loader and defaults for
it.

The request's CFG scale is diffusers' `guidance_scale`: 1 is no guidance, above 1 a
negative-prompt pass (the request's negative prompt, "" when none is given) combined as
`uncond + cfg * (cond - uncond)` and renormalised as LongCatImagePipeline does by default (each
token's vector at most as long as the prompt pass's). The "diffusers" sampler runs the
pipeline's own loop; the WebUI's samplers for flow models run over the shifted Simple schedule,
from noise or an init image (img2img, inpainting, the hires fix: FLUX.1's VAE encodes and
decodes). The prompt rewrite diffusers runs by default is not run (the picture is diffusers'
with `enable_prompt_rewrite=False`).

LongCat-Image-Edit (`LongCatImageEditModel`) is img2img as Forge Neo maps it onto edit
models: the init image the picture to edit, the prompt the instruction, CFG without the
renorm (as diffusers' edit pipeline); txt2img, a mask, a strength and the hires fix are
refused in one line.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...loaders.flow.text_encoder_file import module_stem
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..request import GenerationRequest
from .edit_refs import PictureEditPasses, refuse_strength
from .flow_memory import MemoryLayout
from .flow_model import LLMFlowModel
from .flow_sampling import FLOW_SAMPLERS, FLOW_SCHEDULES

__all__ = ["LONGCAT_IMAGE_DEFAULTS", "LongCatImageEditModel", "LongCatImageModel",
           "load_longcat_image_model", "longcat_image_capabilities", "longcat_image_defaults"]

# LongCatImagePipeline's own defaults: 50 steps at guidance_scale 4.5
LONGCAT_IMAGE_DEFAULTS = SamplingDefaults(steps=50, sampler="Euler", cfg_scale=4.5,
                                          why="diffusers' LongCat-Image settings")


class LongCatImageModel(LLMFlowModel):
    """A loaded LongCat-Image pipeline (`family` "longcat-image", a `LongCatImagePipeline`
    as `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """The WebUI samplers defined for flow models over the Simple schedule, CFG with a
        negative prompt, plain-text prompts with LoRA tags, img2img and inpainting, the hires
        fix, First Block Cache (MagCache's and TeaCache's tables are FLUX.1's), the memory
        modes (flow_memory), variation seeds; no ControlNets, no refiner."""
        return longcat_image_capabilities(self.family)

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: Qwen2.5-VL (its `hidden_states_of`), the
        transformer's double and single blocks, the VAE."""
        pipe, transformer = self.pipe, self.pipe.transformer
        return MemoryLayout(transformer=transformer,
                            blocks=(transformer.transformer_blocks,
                                    transformer.single_transformer_blocks),
                            text_encoders=(pipe.text_encoder,),
                            text_calls=((pipe.text_encoder, "hidden_states_of"),), vae=pipe.vae)

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """diffusers' guidance_scale (the CFG scale) and the negative prompt."""
        return {"guidance_scale": float(request.cfg_scale),
                "negative_prompt": request.negative_prompt}


class LongCatImageEditModel(PictureEditPasses, LongCatImageModel):
    """A loaded LongCat-Image-Edit pipeline (`family` "longcat-image-edit", a
    `LongCatImageEditPipeline` as `pipe`). As Forge Neo maps img2img onto edit models, the
    init image is the picture to edit and the prompt the instruction; the run starts from
    noise beside the picture's latent tokens (the denoising strength does not apply), drawn at
    the request's width x height (diffusers draws at the picture's ~1 MP size: give that for
    its picture)."""

    def memory_layout(self) -> MemoryLayout:
        """LongCat-Image's, with the vision tower in the text encoder's unit: the language
        model's token embeddings, the tower and the multimodal pass each bring the two in."""
        pipe, encoder = self.pipe, self.pipe.text_encoder
        calls = ((encoder, "hidden_states_of"), (encoder, "multimodal_hidden_states"),
                 (encoder.embed_tokens, "forward"), (pipe.vision, "forward"))
        return replace(super().memory_layout(), text_encoders=(encoder, pipe.vision),
                       text_calls=calls)

    def check(self, request: GenerationRequest, width: int, height: int) -> None:
        """LongCat-Image's checks; an init image, no mask, and no strength but the
        default."""
        super().check(request, width, height)
        if request.init_image is None:
            raise ValueError("LongCat-Image-Edit edits a picture: give it as the init image "
                             "(img2img's init_images, the CLI's --init-image) and say the "
                             "edit in the prompt")
        if request.mask is not None:
            raise ValueError("inpainting is not supported for LongCat-Image-Edit yet; leave "
                             "the mask out (say the edit in the prompt)")
        refuse_strength(request, "LongCat-Image-Edit models")


def longcat_image_capabilities(family: str) -> Capabilities:
    """What a LongCat-Image model takes (LongCatImageModel.capabilities says what), the edit
    model's ("longcat-image-edit") the init image as the picture to edit (no hires fix): the
    loaded model's, and the registry's before the weights load."""
    plain = Capabilities(family=family, latent_space="flux", guidance="cfg",
                         samplers=tuple(FLOW_SAMPLERS), schedules=FLOW_SCHEDULES,
                         models="LongCat-Image models", step_cache=("fbc",),
                         prompt_syntax=False, textual_inversion=False, refiner=False,
                         control=False, hires_with_diffusers=False,
                         latent_masked_content=False, memory_modes=True,
                         hires_own_settings=True, noise_multiplier=True)
    if family != "longcat-image-edit":
        return plain
    return replace(plain, models="LongCat-Image-Edit models", references=1, hires=False,
                   noise_multiplier=False, latent_upscale_resize=False)


def longcat_image_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a LongCat-Image (or LongCat-Image-Edit) model samples with where its defaults.json
    says nothing: diffusers' 50 steps at guidance 4.5 for both."""
    return LONGCAT_IMAGE_DEFAULTS


def load_longcat_image_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                             ) -> LongCatImageModel:
    """A LongCat-Image (or LongCat-Image-Edit) diffusers folder as a LongCatImageModel (a
    LongCatImageEditModel); `options.defaults` (the folder's defaults.json) over
    `longcat_image_defaults`. --base and --text-encoder files are refused in one line (the
    folder holds every part)."""
    from .longcat_image import LongCatImagePipeline
    from .longcat_image_edit import LongCatImageEditPipeline

    path = Path(path)
    if options.base is not None or options.text_encoders:
        raise ValueError("a LongCat-Image folder holds every part itself: drop --base and "
                         "--text-encoder")
    edit = family == "longcat-image-edit"
    kind = LongCatImageEditPipeline if edit else LongCatImagePipeline
    pipe = kind.from_pretrained(path, dtype=options.dtype, device=options.device,
                                variant=options.variant, offload=options.offload)
    model = LongCatImageEditModel if edit else LongCatImageModel
    return model(pipe, family=family, name=module_stem(path), defaults=options.defaults,
                 modules=pipe.modules)
