"""`ChronoEditModel`: NVIDIA's ChronoEdit (pipelines.video.chronoedit) behind the
`generate(request)` every door calls, and the registry's loader, defaults and capabilities.

img2img as Forge Neo maps it onto edit models: the init image (fitted to width x height as
img2img fits it, then read by CLIP and the VAE) is the picture to edit, the prompt the
instruction; the run starts from noise beside the picture (the denoising strength does not
apply), with the folder's own scheduler ("diffusers"), CFG against the negative prompt above
1, one seed for the batch (diffusers' batch of one generator). Temporal reasoning takes the
request's `enable_temporal_reasoning`, `num_temporal_reasoning_steps` and `num_frames`
(diffusers' arguments). txt2img, a mask, a strength and the hires fix are refused in one
line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...loaders.flow.text_encoder_file import module_stem
from ...sampling.kdiffusion import DIFFUSERS
from ...text.prompts import extract_extra_networks
from ..contract import Capabilities, Denoisers, LoadOptions, Placement, SamplingDefaults
from ..finite import pictures_uint8
from ..flow.edit_refs import refuse_strength
from ..generation import Denoised, PromptLoras, generate
from ..observer import Observer
from ..request import GenerationRequest
from .chronoedit import ChronoEditPipeline
from .wan_refuse import check_frame_count

__all__ = ["CHRONOEDIT_DEFAULTS", "ChronoEditModel", "chronoedit_capabilities",
           "chronoedit_defaults", "load_chronoedit_model"]

# ChronoEditPipeline's own defaults: 50 steps of the folder's scheduler at guidance 5
CHRONOEDIT_DEFAULTS = SamplingDefaults(steps=50, sampler=DIFFUSERS, cfg_scale=5.0,
                                       why="diffusers' ChronoEdit settings")


class ChronoEditModel:
    """A loaded ChronoEdit folder (`family` "chronoedit", a ChronoEditPipeline as `pipe`)."""

    diffusers_loras = True  # the prompt's LoRAs (Wan's keys) apply to its one sampler

    def __init__(self, pipe: ChronoEditPipeline, *, family: str, name: str = "model",
                 defaults: SamplingDefaults | None = None) -> None:
        self.pipe, self.family, self.name = pipe, family, name
        self.defaults = defaults or CHRONOEDIT_DEFAULTS
        self.lora_dir: str | os.PathLike[str] | None = None
        self.embeddings: Any = None
        self.loras = PromptLoras(pipe.lora_targets)

    @property
    def capabilities(self) -> Capabilities:
        return chronoedit_capabilities(self.family)

    @property
    def native_size(self) -> int:
        """720, the short side of the 1280 x 720 pictures ChronoEdit was trained on (give
        the picture's aspect with the width and height)."""
        return 720

    @property
    def placement(self) -> Placement:
        weight = self.pipe.transformer.proj_out.weight
        return Placement(weight.device, weight.dtype)

    @property
    def denoisers(self) -> Denoisers:
        return self.pipe.denoisers

    @property
    def memory_mode(self) -> Any:
        return self.pipe.memory_mode

    def set_memory_mode(self, mode: Any) -> None:
        """Wan's memory modes (wan_memory), the CLIP vision encoder beside UMT5."""
        self.pipe.set_memory_mode(mode)

    def use_vae(self, path: str | os.PathLike[str]) -> None:
        raise ValueError(f"--vae {path}: ChronoEdit decodes with its folder's Wan VAE; leave "
                         "--vae out")

    def use_float32_vae(self) -> bool:
        return self.pipe.use_float32_vae()

    def generate(self, request: Any = None, /, *, observer: Any = None, progress: Any = None,
                 on_step: Any = None, **settings: Any) -> Any:
        return generate(self, request, settings, observer=observer, progress=progress,
                        on_step=on_step)

    def check(self, request: GenerationRequest, width: int, height: int) -> None:
        """An init image, no mask, the default strength, sides in 16-pixel steps and a
        reasoning video of 1 + 4k frames; one line each otherwise."""
        if request.init_image is None:
            raise ValueError("ChronoEdit edits a picture: give it as the init image (img2img's "
                             "init_images, the CLI's --init-image) and say the edit in the "
                             "prompt")
        if request.mask is not None:
            raise ValueError("inpainting is not supported for ChronoEdit; leave the mask out "
                             "(say the edit in the prompt)")
        refuse_strength(request, "ChronoEdit models")
        multiple = self.pipe.size_multiple
        for name, side in (("width", width), ("height", height)):
            if side % multiple:
                raise ValueError(f"{name} must be a multiple of {multiple} for ChronoEdit, got "
                                 f"{side}; try {max(multiple, side // multiple * multiple)}")
        if request.enable_temporal_reasoning:
            check_frame_count(request.num_frames, self.pipe.temporal_factor)

    def denoise(self, request: GenerationRequest, seed: int, width: int, height: int,
                observer: Observer) -> Denoised:
        """The edit's first and last latent frames (B, C, 2, h, w) from `seed`; the observer
        sees the edit's latent frame."""
        batch = int(request.batch_size)
        prompt = extract_extra_networks(request.prompt)[0]
        reasoning = request.enable_temporal_reasoning

        def step(done: int, total: int, latents: np.ndarray) -> bool:
            return observer.step(done, total, latents[:, :, -1])

        latents = self.pipe.edit(
            request.init_image, [prompt] * batch, negative_prompt=request.negative_prompt,
            height=height, width=width, num_inference_steps=int(request.steps),
            guidance_scale=float(request.cfg_scale), seed=seed, rng=request.rng,
            enable_temporal_reasoning=reasoning,
            num_temporal_reasoning_steps=request.num_temporal_reasoning_steps,
            num_frames=request.num_frames, callback=step, output_type="latent")
        fields: dict[str, Any] = dict(scheduler=None, seeds=[seed] * batch, clip_skip=0)
        if reasoning:
            fields["sampler_fields"] = {
                "Temporal reasoning steps": request.num_temporal_reasoning_steps,
                "Temporal reasoning frames": request.num_frames}
        return Denoised(latents, [seed] * batch, fields)

    def decode(self, latents: np.ndarray, request: GenerationRequest | None = None
               ) -> list[np.ndarray]:
        """The pictures (H, W, 3) uint8 of the edit's latents (B, C, 2, h, w); a preview's
        single latent frame (B, C, h, w) decoded alone."""
        if latents.ndim == 4:
            frames = self.pipe._with_vae(lambda _: self.pipe.decode(latents[:, :, None]))
            return pictures_uint8(frames[:, -1], self.pipe.vae)
        return pictures_uint8(self.pipe.edited(latents), self.pipe.vae)


def chronoedit_capabilities(family: str) -> Capabilities:
    """What ChronoEdit takes (the loaded model's, and the registry's before it loads): img2img
    with its init image as the picture to edit, the folder's scheduler ("diffusers"), CFG,
    plain-text prompts with LoRA tags, temporal reasoning, the memory modes."""
    return Capabilities(family=family, latent_space="wan", guidance="cfg", samplers=(),
                        schedules=(), models="ChronoEdit models", prompt_syntax=False,
                        textual_inversion=False, refiner=False, control=False,
                        variation_seeds=False, latent_upscale_resize=False, hires=False,
                        hires_with_diffusers=False, latent_masked_content=False,
                        references=1, temporal_reasoning=True)


def chronoedit_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """CHRONOEDIT_DEFAULTS: diffusers' 50 steps at guidance 5."""
    return CHRONOEDIT_DEFAULTS


def load_chronoedit_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                          ) -> ChronoEditModel:
    """A ChronoEdit diffusers folder as a ChronoEditModel; `options.defaults` (the folder's
    defaults.json) over CHRONOEDIT_DEFAULTS. --text-encoder and --base are refused in one
    line (the folder holds every part)."""
    if options.text_encoders or options.base:
        raise ValueError("a ChronoEdit folder holds every part itself: leave --text-encoder "
                         "and --base out")
    pipe = ChronoEditPipeline.from_pretrained(Path(path), dtype=options.dtype,
                                              device=options.device, variant=options.variant,
                                              offload=options.offload)
    return ChronoEditModel(pipe, family=family, name=module_stem(Path(path)),
                           defaults=options.defaults or CHRONOEDIT_DEFAULTS)
