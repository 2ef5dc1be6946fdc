"""`Kandinsky5Model`: Kandinsky 5 (Image Lite) behind the `generate(request)` every door calls,
the flow family's `FlowModel` with Kandinsky 5's CFG, and the registry's loader and defaults.

The request's CFG scale is diffusers' `guidance_scale`: 1 is no guidance, above 1 a
negative-prompt pass combined as `neg + cfg * (pos - neg)`. The "diffusers" sampler runs
Kandinsky5T2IPipeline's own loop (its noise drawn channels last, as diffusers draws it); the
WebUI's samplers for flow models run over the Simple schedule with the config's shift, from
noise or an init image (img2img, inpainting, the hires fix: FLUX's VAE in Kandinsky 5's
unshifted space).

The editing model (`Kandinsky5EditModel`, family "kandinsky-5-edit": Kandinsky5I2IPipeline
folders) takes img2img as Forge Neo maps it onto edit models: the init image is the picture to
edit (read by Qwen2.5-VL with the prompt, and its latents beside the noise at the request's
width x height), the prompt the instruction; the run starts from noise, so the denoising
strength does not apply, and txt2img is refused. With a mask the init image is also the
picture inpainted, at the denoising strength (diffusion.pipelines.flow.edit_refs). The WebUI
samplers read the picture's VAE mean (no draw of its own), the "diffusers" sampler its
posterior drawn after the noise, as Kandinsky5I2IPipeline. The hires fix (WebUI samplers)
is flow_hires' for edit models: the second pass reads the same picture, Qwen2.5-VL at half
its size as in the first, the VAE at the hires size (its latents must lie over the output's).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ...loaders.flow.text_encoder_file import module_stem
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..finite import pictures_uint8
from ..request import GenerationRequest
from .edit_refs import PictureEditPasses, refuse_strength
from .flow_memory import MemoryLayout
from .flow_model import LLMFlowModel
from .flow_sampling import FLOW_SAMPLERS, FLOW_SCHEDULES
from .start import base_folder

__all__ = ["EDIT_FAMILY", "KANDINSKY5_DEFAULTS", "Kandinsky5EditModel", "Kandinsky5Model",
           "kandinsky5_capabilities", "kandinsky5_defaults", "load_kandinsky5_model"]

EDIT_FAMILY = "kandinsky-5-edit"  # the editing model's (Kandinsky5I2IPipeline folders)

# Kandinsky5T2IPipeline's own defaults: 50 steps at guidance_scale 3.5
KANDINSKY5_DEFAULTS = SamplingDefaults(steps=50, sampler="Euler", cfg_scale=3.5,
                                       why="diffusers' Kandinsky 5 settings")


class Kandinsky5Model(LLMFlowModel):
    """A loaded Kandinsky 5 pipeline (`family` "kandinsky-5", a `Kandinsky5Pipeline` as
    `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """The WebUI samplers defined for flow models over the Simple schedule, CFG with a
        negative prompt, plain-text prompts, img2img and inpainting, the hires fix, First
        Block Cache, the memory modes (flow_memory), variation seeds; no ControlNets, no
        refiner."""
        return kandinsky5_capabilities(self.family)

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: Qwen2.5-VL (its `hidden_states`) and CLIP (its pooled
        pass) together, the transformer (also brought in by `text`) and its text and visual
        blocks, the VAE."""
        pipe, transformer = self.pipe, self.pipe.transformer
        return MemoryLayout(transformer=transformer,
                            blocks=(transformer.text_transformer_blocks,
                                    transformer.visual_transformer_blocks),
                            text_encoders=(pipe.text_encoder, pipe.text_encoder_2),
                            text_calls=((pipe.text_encoder, "hidden_states"),
                                        (pipe.text_encoder_2, "forward_pooled")),
                            vae=pipe.vae, transformer_calls=("text",))

    def encode_init(self, pixels: np.ndarray, generator: Any) -> np.ndarray:
        """The init image's latents in Kandinsky 5's space (`Kandinsky5Pipeline.
        encode_image`)."""
        return self.pipe.encode_image(pixels, generator)  # type: ignore[no-any-return]

    def decode(self, latents: np.ndarray, request: GenerationRequest) -> list[np.ndarray]:
        """The pictures through FLUX's VAE, the latents divided by its scaling factor alone."""
        return pictures_uint8(self.pipe.decode(latents), self.pipe.vae)

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """diffusers' guidance_scale (the CFG scale) and the negative prompt."""
        return {"guidance_scale": float(request.cfg_scale),
                "negative_prompt": request.negative_prompt,
                **self._length_and_control(request)}


class Kandinsky5EditModel(PictureEditPasses, Kandinsky5Model):
    """A loaded Kandinsky 5 editing model (`family` "kandinsky-5-edit", a
    `Kandinsky5EditPipeline` as `pipe`): the module's docstring says how it takes img2img."""

    @property
    def capabilities(self) -> Capabilities:
        """Kandinsky5Model's; the init image is the picture to edit (with a mask the picture
        inpainted too), one picture; the hires fix with it (the second pass reads it
        enlarged to the hires size); no noise multiplier."""
        return kandinsky5_capabilities(self.family)

    def memory_layout(self) -> MemoryLayout:
        """Kandinsky5Model's, with the vision tower in the text encoders' unit: the language
        model's token embeddings, the tower and the multimodal pass each bring it in."""
        pipe, encoder = self.pipe, self.pipe.text_encoder
        calls = ((encoder, "multimodal_hidden_states"), (encoder.embed_tokens, "forward"),
                 (pipe.vision, "forward"), (pipe.text_encoder_2, "forward_pooled"))
        return replace(super().memory_layout(),
                       text_encoders=(encoder, pipe.vision, pipe.text_encoder_2),
                       text_calls=calls)

    def check(self, request: GenerationRequest, width: int, height: int) -> None:
        """Kandinsky5Model's checks; an init image, and no strength but the default without
        a mask."""
        super().check(request, width, height)
        if request.init_image is None:
            raise ValueError("Kandinsky 5's editing model edits a picture: give it as the init "
                             "image (img2img's init_images, the CLI's --init-image) and say "
                             "the edit in the prompt")
        refuse_strength(request, "Kandinsky 5 editing models")


def kandinsky5_capabilities(family: str) -> Capabilities:
    """What a Kandinsky 5 model takes (Kandinsky5Model.capabilities says what; the editing
    model's, "kandinsky-5-edit", reads its init image as the picture to edit): the loaded
    model's, and the registry's before the weights load."""
    text_to_image = Capabilities(
        family=family, latent_space="flux", guidance="cfg", samplers=tuple(FLOW_SAMPLERS),
        schedules=FLOW_SCHEDULES, models="Kandinsky 5 models", step_cache=("fbc",),
        prompt_syntax=False, textual_inversion=False, refiner=False, control=False,
        hires_with_diffusers=False, latent_masked_content=False, memory_modes=True,
        hires_own_settings=True, noise_multiplier=True)
    if family != EDIT_FAMILY:
        return text_to_image
    return replace(text_to_image, models="Kandinsky 5 editing models", references=1,
                   noise_multiplier=False, latent_upscale_resize=False,
                   hires_with_references=True)


def kandinsky5_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a Kandinsky 5 model samples with where its defaults.json says nothing."""
    return KANDINSKY5_DEFAULTS


def load_kandinsky5_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                          ) -> Kandinsky5Model:
    """A Kandinsky 5 diffusers folder, or a single-file transformer with `options.base` (a
    Kandinsky 5 folder giving the text encoders, tokenizers, VAE and scheduler), as a
    Kandinsky5Model, or the editing model's folder (`family` "kandinsky-5-edit") as a
    Kandinsky5EditModel; `options.defaults` (the folder's defaults.json) over
    `kandinsky5_defaults`. A --text-encoder file is refused in one line (the text encoders
    come from the folder)."""
    from .kandinsky5 import Kandinsky5Pipeline
    from .kandinsky5_edit import Kandinsky5EditPipeline

    path = Path(path)
    if options.text_encoders:
        raise ValueError("Kandinsky 5 reads its text encoders from its diffusers folder: drop "
                         "--text-encoder")
    folder, transformer_file = base_folder(
        path, options.base, "Kandinsky 5",
        parts="text encoders, tokenizers, VAE and scheduler")
    edit = family == EDIT_FAMILY
    kind = Kandinsky5EditPipeline if edit else Kandinsky5Pipeline
    pipe = kind.from_pretrained(folder, dtype=options.dtype, device=options.device,
                                variant=options.variant, transformer_file=transformer_file,
                                offload=options.offload)
    model = Kandinsky5EditModel if edit else Kandinsky5Model
    return model(pipe, family=family, name=module_stem(path), defaults=options.defaults,
                 modules=pipe.modules)
