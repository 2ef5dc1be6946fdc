"""`JoyImageModel`: JoyImage Edit (pipelines.flow.joyimage) behind the `generate(request)` every
door calls, and the registry's loader, defaults and capabilities (JoyImage Edit Plus's too:
the init image and the further references are its pictures, in order).

img2img as Forge Neo maps it onto edit models: the init image is the picture to edit (scaled
to cover the request's width x height and centre-cropped, as diffusers' pipeline fits it to
its bucket), the prompt the instruction; the run starts from noise beside the picture (the
denoising strength does not apply), with the folder's own scheduler ("diffusers"), CFG with
its rescale against the negative prompt above 1. txt2img draws from the prompt alone. Each
picture of a batch comes from its own seed (seed, seed + 1, ...). A mask, a strength, the
hires fix are refused in one line. The prompt's LoRAs (diffusers/PEFT names) patch the
transformer; the memory modes (flow_memory) move Qwen3-VL with its vision tower, the
transformer's double blocks and the VAE.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ...loaders.flow.text_encoder_file import module_stem
from ...sampling.kdiffusion import DIFFUSERS
from ...text.prompts import extract_extra_networks
from ..contract import Capabilities, Denoisers, LoadOptions, Placement, SamplingDefaults
from ..finite import pictures_uint8
from ..generation import Denoised, PromptLoras, generate
from ..observer import Observer
from ..request import GenerationRequest
from ..vae_float32 import float32_copy
from .edit_refs import reference_pictures, refuse_strength
from .flow_memory import MemoryLayout, MemoryModes
from .joyimage import MULTIPLE, JoyImageEditPipeline

__all__ = ["JOYIMAGE_DEFAULTS", "JoyImageModel", "joyimage_capabilities", "joyimage_defaults",
           "load_joyimage_model"]

# JoyImageEditPipeline's own defaults: 40 steps of the folder's scheduler at guidance 4
JOYIMAGE_DEFAULTS = SamplingDefaults(steps=40, sampler=DIFFUSERS, cfg_scale=4.0,
                                     why="diffusers' JoyImage Edit settings")


class JoyImageModel(MemoryModes):
    """A loaded JoyImage Edit folder (`family` "joyimage-edit", or "joyimage-edit-plus", a
    JoyImageEditPipeline as `pipe`)."""

    diffusers_loras = True  # the prompt's LoRAs apply to its one sampler

    def __init__(self, pipe: JoyImageEditPipeline, *, family: str, name: str = "model",
                 defaults: SamplingDefaults | None = None) -> None:
        self.pipe, self.family, self.name = pipe, family, name
        self.defaults = defaults or JOYIMAGE_DEFAULTS
        self.lora_dir: str | os.PathLike[str] | None = None
        self.embeddings: Any = None
        self.loras = PromptLoras(self.lora_targets)

    @property
    def capabilities(self) -> Capabilities:
        return joyimage_capabilities(self.family)

    @property
    def native_size(self) -> int:
        """1024: its buckets hold about a megapixel (give the picture's aspect with the width
        and height; pipelines.flow.joyimage.bucket gives diffusers' size)."""
        return 1024

    @property
    def placement(self) -> Placement:
        weight = self.pipe.transformer.proj_out.weight
        return Placement(weight.device, weight.dtype)

    @property
    def denoisers(self) -> Denoisers:
        return Denoisers((self.pipe.transformer,), "transformer")

    def lora_targets(self) -> Any:
        """What the prompt's LoRAs patch: the transformer (diffusers/PEFT's names)."""
        return SimpleNamespace(unet=self.pipe.transformer, transformer=self.pipe.transformer)

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: Qwen3-VL (its `hidden_states` for a prompt alone, its
        token embeddings and multimodal pass for one read with pictures) with its vision tower
        as one unit, the transformer (also brought in by `prepare_text`, its text projection
        run once a prompt) and its double blocks, the VAE (`encode` reads the pictures)."""
        pipe, encoder = self.pipe, self.pipe.text_encoder
        calls: tuple[tuple[Any, str], ...] = (
            (encoder, "hidden_states"), (encoder, "multimodal_hidden_states"),
            (encoder.embed_tokens, "forward"))
        readers: tuple[Any, ...] = (encoder,)
        if pipe.vision is not None:
            calls += ((pipe.vision, "forward"),)
            readers += (pipe.vision,)
        return MemoryLayout(transformer=pipe.transformer, blocks=(pipe.transformer.double_blocks,),
                            text_encoders=readers, text_calls=calls, vae=pipe.vae,
                            transformer_calls=("prepare_text",))

    def use_vae(self, path: str | os.PathLike[str]) -> None:
        raise ValueError(f"--vae {path}: JoyImage Edit decodes with its folder's Wan VAE; "
                         "leave --vae out")

    def use_float32_vae(self) -> bool:
        """The VAE made float32 from its own weights; False where it is float32 already."""
        vae = float32_copy(self.pipe.vae)
        if vae is self.pipe.vae:
            return False
        self.replace_vae(self.pipe.vae, vae)  # the memory mode's unit follows
        self.pipe.vae = vae
        return True

    def generate(self, request: Any = None, /, *, observer: Any = None, progress: Any = None,
                 on_step: Any = None, **settings: Any) -> Any:
        return generate(self, request, settings, observer=observer, progress=progress,
                        on_step=on_step)

    def check(self, request: GenerationRequest, width: int, height: int) -> None:
        """No mask, the default strength, sides in 16-pixel steps; one line each
        otherwise."""
        if request.mask is not None:
            raise ValueError("inpainting is not supported for JoyImage Edit; leave the mask "
                             "out (say the edit in the prompt)")
        refuse_strength(request, "JoyImage Edit models")
        for name, side in (("width", width), ("height", height)):
            if side % MULTIPLE:
                raise ValueError(f"{name} must be a multiple of {MULTIPLE} for JoyImage Edit, "
                                 f"got {side}; try {max(MULTIPLE, side // MULTIPLE * MULTIPLE)}")

    def denoise(self, request: GenerationRequest, seed: int, width: int, height: int,
                observer: Observer) -> Denoised:
        """The drawn frames' latents (B, C, 1, h, w), picture i from seed + i; the observer
        sees the frame (B, C, h, w)."""
        prompt = extract_extra_networks(request.prompt)[0]
        seeds = [seed + i for i in range(int(request.batch_size))]

        def step(done: int, total: int, latents: np.ndarray) -> bool:
            return observer.step(done, total, latents[:, :, 0])

        latents = [self.pipe(
            prompt, image=reference_pictures(request) or None, height=height, width=width,
            negative_prompt=request.negative_prompt, num_inference_steps=int(request.steps),
            guidance_scale=float(request.cfg_scale), seed=s, rng=request.rng,
            callback=step, output_type="latent") for s in seeds]
        return Denoised(np.concatenate(latents), seeds,
                        dict(scheduler=None, seeds=seeds, clip_skip=0))

    def decode(self, latents: np.ndarray, request: GenerationRequest | None = None
               ) -> list[np.ndarray]:
        """The pictures (H, W, 3) uint8 of the drawn frames' latents (B, C, 1, h, w), or of a
        preview's frame (B, C, h, w)."""
        frames = latents[:, :, None] if latents.ndim == 4 else latents
        return pictures_uint8(self.pipe.decode(frames), self.pipe.vae)


def joyimage_capabilities(family: str) -> Capabilities:
    """What JoyImage Edit takes (the loaded model's, and the registry's before it loads):
    Wan 2.1's normalized latents (the previews' map), img2img with its init image as the
    picture to edit, txt2img, the folder's scheduler ("diffusers"), CFG, plain-text
    prompts with LoRA tags, the memory modes (flow_memory); Plus ("joyimage-edit-plus") any
    number of pictures (the init image first, then the further references)."""
    return Capabilities(family=family, latent_space="wan", guidance="cfg", samplers=(),
                        schedules=(), models="JoyImage Edit models", prompt_syntax=False,
                        textual_inversion=False, refiner=False, control=False,
                        variation_seeds=False, latent_upscale_resize=False, hires=False,
                        hires_with_diffusers=False, latent_masked_content=False,
                        memory_modes=True,
                        references=None if family == "joyimage-edit-plus" else 1)


def joyimage_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """JOYIMAGE_DEFAULTS: diffusers' 40 steps at guidance 4."""
    return JOYIMAGE_DEFAULTS


def load_joyimage_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                        ) -> JoyImageModel:
    """A JoyImage Edit diffusers folder as a JoyImageModel; `options.defaults` (the folder's
    defaults.json) over JOYIMAGE_DEFAULTS. --text-encoder and --base are refused in one line
    (the folder holds every part)."""
    if options.text_encoders or options.base:
        raise ValueError("a JoyImage Edit folder holds every part itself: leave "
                         "--text-encoder and --base out")
    pipe = JoyImageEditPipeline.from_pretrained(Path(path), dtype=options.dtype,
                                                device=options.device,
                                                variant=options.variant,
                                                offload=options.offload)
    return JoyImageModel(pipe, family=family, name=module_stem(Path(path)),
                         defaults=options.defaults or JOYIMAGE_DEFAULTS)
