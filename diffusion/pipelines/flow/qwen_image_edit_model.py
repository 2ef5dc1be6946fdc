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
for Qwen-Image. An edit model needs its picture: txt2img is refused. An Edit Plus model
(2509 and later) reads several references: the init image and the request's further
`references`, in order (the CLI's --reference, the server's init_images beyond the first);
Qwen-Image-Edit reads the init image alone.

The hires fix (WebUI samplers; not with a mask) is Qwen-Image's (flow_hires): the first
pass's picture upscaled, then img2img at the hires denoising strength beside the same
references, unchanged (the init image fitted to width x height, read at about a megapixel
as the first pass read it), as FLUX.1 Kontext's (kontext_model).

Inpainting (a mask) is diffusers' QwenImageEditInpaintPipeline: the init image is the picture
inpainted, noised by the request's denoising strength, its unmasked part put back after every
step, and still the reference (the picture Qwen2.5-VL reads with the instruction, and its
latent tokens: with the "diffusers" sampler the start's posterior draw at the request's size,
as there; with the WebUI samplers the VAE mean at about a megapixel, as an edit reads it). An
Edit Plus model's further references steer it as above: diffusers has no such pipeline, and
the "diffusers" sampler runs QwenImageEditInpaintPipeline's loop fed what
QwenImageEditPlusPipeline feeds the transformer (its prompt embeddings, the further
references' latent tokens after the init image's draw). The mask goes the way of every flow
family's (mask blur, "Only masked", masked content; with the WebUI samplers the WebUI's latent
mask: diffusion.pipelines.flow.edit_refs.EditPasses).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...loaders.flow.text_encoder_file import module_stem
from ...loaders.qwen_image import qwenimage_edit_family
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..request import GenerationRequest
from .edit_refs import PictureEditPasses, reference_pictures, refuse_strength
from .flow_memory import MemoryLayout
from .qwen_image_model import QWENIMAGE_DEFAULTS, QwenImageModel, qwenimage_capabilities
from .start import base_folder

__all__ = ["QwenImageEditModel", "load_qwenimage_edit_model", "qwenimage_edit_capabilities",
           "qwenimage_edit_defaults", "qwenimage_edit_family"]


class QwenImageEditModel(PictureEditPasses, QwenImageModel):
    """A loaded Qwen-Image-Edit pipeline (`family` "qwen-image-edit", a
    `QwenImageEditPipeline` as `pipe`)."""

    @property
    def plus(self) -> bool:
        """Whether it reads several references (Edit-2509 and later)."""
        return self.family == "qwen-image-edit-plus"

    @property
    def capabilities(self) -> Capabilities:
        """Qwen-Image's; the init image is the picture to edit (an Edit Plus model's
        first reference of any number), with a mask the picture inpainted too; the hires fix
        beside the references."""
        return qwenimage_edit_capabilities(self.family)

    def memory_layout(self) -> MemoryLayout:
        """Qwen-Image's, with the vision tower in the text encoder's unit: the language model's
        token embeddings, the tower and the multimodal pass each bring the two in."""
        pipe, encoder = self.pipe, self.pipe.text_encoder
        calls = ((encoder, "hidden_states_of"), (encoder, "multimodal_hidden_states"),
                 (encoder.embed_tokens, "forward"), (pipe.vision, "forward"))
        return replace(super().memory_layout(), text_encoders=(encoder, pipe.vision),
                       text_calls=calls)

    def _image(self, request: GenerationRequest) -> Any:
        """The pipeline's `image`: the init image, or an Edit Plus model's references."""
        return reference_pictures(request) if self.plus else request.init_image

    def check(self, request: GenerationRequest, width: int, height: int) -> None:
        """Qwen-Image's checks; an init image, and no strength but the default without a
        mask."""
        super().check(request, width, height)
        if request.init_image is None:
            raise ValueError("Qwen-Image-Edit edits a picture: give it as the init image "
                             "(img2img's init_images, the CLI's --init-image) and say the "
                             "edit in the prompt")
        refuse_strength(request, "Qwen-Image-Edit models")


def qwenimage_edit_capabilities(family: str) -> Capabilities:
    """Qwen-Image's (qwenimage_capabilities), the init image the picture to edit (an Edit
    Plus model's, "qwen-image-edit-plus", first reference of any number): QwenImageEditModel's,
    and the registry's before the weights load."""
    return replace(qwenimage_capabilities(family), models="Qwen-Image-Edit models",
                   references=None if family == "qwen-image-edit-plus" else 1,
                   noise_multiplier=False, latent_upscale_resize=False,
                   hires_with_references=True)


def qwenimage_edit_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a Qwen-Image-Edit model samples with where its defaults.json says nothing:
    QwenImageEditPipeline's 50 steps at true_cfg_scale 4."""
    return replace(QWENIMAGE_DEFAULTS, why="diffusers' Qwen-Image-Edit settings; CFG is its "
                   "true_cfg_scale")


def load_qwenimage_edit_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                              ) -> QwenImageEditModel:
    """A QwenImageEditPipeline or QwenImageEditPlusPipeline (Edit-2509 and later: several
    references) diffusers folder, or a single-file edit transformer with `options.base` (such
    a folder giving the rest), as a QwenImageEditModel; `family` (the folder's class, or the
    file's name) picks the pipeline; `options.defaults` (the folder's defaults.json) over
    `qwenimage_edit_defaults`."""
    from .qwen_image_edit import QwenImageEditPipeline
    from .qwen_image_edit_plus import QwenImageEditPlusPipeline

    kind = QwenImageEditPlusPipeline if family == "qwen-image-edit-plus" else (
        QwenImageEditPipeline)
    path = Path(path)
    if options.text_encoders:
        raise ValueError("a --text-encoder file is not supported for Qwen-Image-Edit yet; "
                         "leave it out (the folder's text_encoder/, Qwen2.5-VL with its vision "
                         "tower, reads the prompt and the pictures)")
    folder, transformer_file = base_folder(
        path, options.base, "Qwen-Image-Edit",
        parts="text encoder and vision tower, tokenizer, processor, VAE and scheduler")
    pipe = kind.from_pretrained(folder, dtype=options.dtype, device=options.device,
                                variant=options.variant, transformer_file=transformer_file,
                                offload=options.offload)
    name = module_stem(path)  # as Forge
    return QwenImageEditModel(pipe, family=family, name=name, defaults=options.defaults,
                              modules=pipe.modules)

