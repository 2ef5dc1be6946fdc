"""`QwenImage21Model`: Qwen-Image 2.1 behind the `generate(request)` every door calls, the flow
family's `FlowModel` with its true CFG, and the registry's loader and defaults for it.

The request's CFG scale is diffusers' `true_cfg_scale`: 1 is no guidance, above 1 a
negative-prompt pass (the request's negative prompt, "" when none is given) combined as
`neg + cfg * (pos - neg)`, as QwenImage21Pipeline does (no rescale). The "diffusers" sampler
runs QwenImage21Pipeline's own loop over the author's sigmas; the WebUI's samplers for flow
models run over the shifted Simple schedule.

img2img is Qwen-Image 2.1's editing, as Forge Neo maps img2img onto edit models (and as
FLUX.2's is here): the init image (fitted to width x height by the resize mode) and the
request's further `references` are the condition pictures, in order, read as diffusers'
QwenImage21Pipeline reads its `image` list, and the prompt is the instruction; the run starts
from noise beside them (no denoising strength). With a mask the init image is also the picture
inpainted (noised by the strength, its unmasked part put back after every step), as every flow
family inpaints (edit_refs). The hires fix (WebUI samplers; not with a mask) runs on img2img as
on txt2img, the condition pictures steering both passes as FLUX.2's (flow_hires): the second
pass's request keeps them, so its guided flow reads every one as the first pass read it (the
init image fitted to width x height, not enlarged to the hires size); what the first pass read
of them (the vision tower's features, the VAE's latents, the prompt's prefix beside them) is
kept for the second where they and the prompt are the same, not read again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ...loaders.flow.text_encoder_file import module_stem
from ...loaders.formats.diffusers_folder import read_json
from ...models.step_cache import StepCache
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..finite import pictures_uint8
from ..generation import Denoised
from ..observer import Observer
from ..request import GenerationRequest
from .edit_refs import EditPasses, inpainting, reference_pictures, refuse_strength
from .flow_memory import MemoryLayout
from .flow_model import LLMFlowModel
from .flow_sampling import FLOW_SAMPLERS, FLOW_SCHEDULES
from .start import base_folder

__all__ = ["QWENIMAGE21_DEFAULTS", "QwenImage21Model", "load_qwenimage21_model",
           "qwenimage21_capabilities", "qwenimage21_defaults"]

# QwenImage21Pipeline's own defaults: 40 steps, true_cfg_scale 1 (no negative pass)
QWENIMAGE21_DEFAULTS = SamplingDefaults(
    steps=40, sampler="Euler", cfg_scale=1.0,
    why="diffusers' Qwen-Image 2.1 settings; CFG is its true_cfg_scale")


class QwenImage21Model(EditPasses, LLMFlowModel):
    """A loaded Qwen-Image 2.1 pipeline (`family` "qwen-image-2.1", a `QwenImage21Pipeline`
    as `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """The WebUI samplers defined for flow models over the Simple schedule, true CFG with
        a negative prompt, plain-text prompts with LoRA tags, condition pictures (img2img:
        the init image the first; with a mask the picture inpainted too), the hires fix with
        the WebUI samplers on txt2img and img2img (not with a mask), variation seeds, the
        memory modes (flow_memory), First Block Cache (MagCache's and TeaCache's tables are
        FLUX's); not yet: ControlNets, a refiner."""
        return qwenimage21_capabilities(self.family)

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: Qwen3-VL (its `hidden_states`, which encode_t2i calls,
        and `hidden_states_of` under it; with its vision tower, which read_pictures calls
        before the multimodal passes), the transformer (also brought in by `prefix`, which
        runs its blocks over the prompt once a prompt) and its blocks (run by their `prefix`
        and `image`, never by `forward`), the VAE."""
        pipe, transformer, encoder = self.pipe, self.pipe.transformer, self.pipe.text_encoder
        blocks = transformer.transformer_blocks
        calls: tuple[tuple[Any, str], ...] = ((encoder, "hidden_states"),
                                              (encoder, "hidden_states_of"))
        readers: tuple[Any, ...] = (encoder,)
        if pipe.vision is not None:  # the tower in the text encoder's unit (Qwen-Image-Edit's)
            calls += ((encoder, "multimodal_hidden_states"), (encoder.embed_tokens, "forward"),
                      (pipe.vision, "forward"))
            readers += (pipe.vision,)
        return MemoryLayout(transformer=transformer, blocks=(blocks,),
                            text_encoders=readers, text_calls=calls,
                            vae=pipe.vae,
                            block_calls=tuple((block, method) for block in blocks
                                              for method in ("prefix", "image")),
                            transformer_calls=("prefix",))

    # one denoising's condition readings and prefixes (QwenImage21Pipeline.velocity's `kept`)
    _kept: dict[Any, Any] | None = None

    def denoise(self, request: GenerationRequest, seed: int, width: int, height: int,
                observer: Observer) -> Denoised:
        """FlowModel's, its passes (the hires pass's, a prompt edit's) sharing what they read
        alike: the condition pictures' tower features and latents, and a prompt's prefix
        beside them. Kept for this denoising alone: the weights (a LoRA, a VAE made float32)
        may change before the next."""
        self._kept = {}
        try:
            return super().denoise(request, seed, width, height, observer)
        finally:
            self._kept = None

    def check(self, request: GenerationRequest, width: int, height: int) -> None:
        """FlowModel's checks; the init image a condition picture: no strength without a
        mask."""
        super().check(request, width, height)
        refuse_strength(request, "Qwen-Image 2.1 models")

    def _diffusers(self, request: GenerationRequest, prompts: list[str], seed: int,
                   width: int, height: int, observer: Observer,
                   cache: StepCache | None = None) -> np.ndarray:
        return self.pipe(prompts, height=height, width=width,  # type: ignore[no-any-return]
                         num_inference_steps=int(request.steps), seed=seed, rng=request.rng,
                         callback=observer.step, output_type="latent", cache=cache,
                         image=reference_pictures(request), **self._guidance(request),
                         **inpainting(request))

    def guided_flow(self, request: GenerationRequest, prompts: list[str], width: int,
                    height: int, cache: StepCache | None = None
                    ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...],
                               float | None]:
        """The guided flow of `prompts` (true CFG inside QwenImage21Pipeline.velocity, the
        request's condition pictures read with each prompt), its latents' shape and the
        schedule's mu; `cache`: the generation's step cache (each pass a branch of it)."""
        return self.pipe.velocity(  # type: ignore[no-any-return]
            prompts, height=height, width=width, cache=cache,
            references=reference_pictures(request), kept=self._kept,
            **self._guidance(request))

    @property
    def latent_channels(self) -> int:
        return int(self.pipe.vae.config["z_dim"])

    def encode_init(self, pixels: np.ndarray, generator: Any) -> np.ndarray:
        """The init image's latents through the 2.1 VAE (`QwenImage21Pipeline.encode_image`)."""
        return self.pipe.encode_image(pixels, generator)  # type: ignore[no-any-return]

    def decode(self, latents: np.ndarray, request: GenerationRequest) -> list[np.ndarray]:
        """The pictures through the 2.1 VAE."""
        return pictures_uint8(self.pipe.decode(latents), self.pipe.vae)

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """diffusers' true_cfg_scale (the CFG scale) and the negative prompt."""
        return {"true_cfg_scale": float(request.cfg_scale),
                "negative_prompt": request.negative_prompt}


def qwenimage21_capabilities(family: str) -> Capabilities:
    """What a Qwen-Image 2.1 model takes (QwenImage21Model.capabilities says what): the
    loaded model's, and the registry's before the weights load."""
    return Capabilities(family=family, latent_space="qwen-image-2.1", guidance="cfg",
                        samplers=tuple(FLOW_SAMPLERS), schedules=FLOW_SCHEDULES,
                        models="Qwen-Image 2.1 models", step_cache=("fbc",), prompt_syntax=False,
                        textual_inversion=False, refiner=False, control=False,
                        hires_with_diffusers=False, latent_masked_content=False,
                        memory_modes=True, noise_multiplier=True, references=None,
                        hires_with_references=True)


def qwenimage21_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a Qwen-Image 2.1 model samples with where its defaults.json says nothing:
    diffusers' 40 steps, or as many as the author's sigmas in model_index.json."""
    index = Path(path) / "model_index.json"
    sigmas = read_json(index).get("sample_sigmas") if index.is_file() else None
    if isinstance(sigmas, list) and sigmas:
        return SamplingDefaults(steps=len(sigmas), sampler="Euler", cfg_scale=1.0,
                                why="the model's sample_sigmas; CFG is its true_cfg_scale")
    return QWENIMAGE21_DEFAULTS


def load_qwenimage21_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                           ) -> QwenImage21Model:
    """A Qwen-Image 2.1 diffusers folder, or a single-file transformer with `options.base` (a
    Qwen-Image 2.1 folder giving the text encoder, processor, VAE and scheduler), as a
    QwenImage21Model; `options.defaults` (the folder's defaults.json) over
    `qwenimage21_defaults`. A --text-encoder file is refused in one line (the text encoder
    comes from the folder)."""
    from .qwen_image21 import QwenImage21Pipeline

    path = Path(path)
    if options.text_encoders:
        raise ValueError("Qwen-Image 2.1 reads its text encoder from its diffusers folder: "
                         "drop --text-encoder")
    folder, transformer_file = base_folder(path, options.base, "Qwen-Image 2.1",
                                           parts="text encoder, processor, VAE and scheduler")
    pipe = QwenImage21Pipeline.from_pretrained(folder, dtype=options.dtype,
                                               device=options.device, variant=options.variant,
                                               transformer_file=transformer_file,
                                               offload=options.offload)
    return QwenImage21Model(pipe, family=family, name=module_stem(path),
                            defaults=options.defaults, modules=pipe.modules)
