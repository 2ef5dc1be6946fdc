"""Bria FIBO Edit, as diffusers' BriaFiboEditPipeline draws it: FIBO (bria_fibo) with the
pictures to edit as extra tokens. Each reference picture is resized (Lanczos) to at most a
megapixel at its own aspect, each side a multiple of 16, and Wan 2.2's VAE encodes it (the
posterior's mean, normalized); its latent pixels ride after the noise's in every transformer
call, reference k at rotary positions (k, row, column) where the picture drawn is at (0, row,
column), and only the noise tokens' flow is kept. The output size is the first reference's,
moved to the nearest of FIBO's preferred megapixel sizes by aspect, unless given. The prompt
is an edit JSON caption (a JSON object with an "edit_instruction"), as the pipeline insists;
Bria's VLM that writes it from a plain instruction is not part of the pipeline.

    pipe = BriaFiboEditPipeline.from_pretrained("Fibo-Edit")
    images = pipe('{"edit_instruction": "make the owl a cat"}', image=owl, seed=7)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpustd import asarray

from ...imaging import rgb_picture, to_unit_image
from ...noise.rng import make_generator
from .bria_fibo import MAX_SEQUENCE_LENGTH, BriaFiboPipeline
from .start import StepCallback, check_call

__all__ = ["PREFERRED_SIZES", "BriaFiboEditPipeline", "edit_size", "reference_size"]

# (width, height): BriaFiboEditPipeline's PREFERRED_RESOLUTION[1024 * 1024]
PREFERRED_SIZES = ((832, 1248), (880, 1184), (912, 1136), (1024, 1024), (1136, 912),
                   (1184, 880), (1216, 848), (1248, 832), (1264, 816), (1296, 800),
                   (1360, 768))


def reference_size(width: int, height: int, base: int = 1024, multiple: int = 16
                   ) -> tuple[int, int]:
    """A reference's (width, height) for the VAE: at most base x base pixels at its aspect,
    each side rounded (half to even) to a multiple of 16. diffusers: `_vae_safe_dims`."""
    scale = min(1.0, ((base * base) / float(width * height)) ** 0.5)
    return (max(multiple, round(width * scale / multiple) * multiple),
            max(multiple, round(height * scale / multiple) * multiple))


def edit_size(width: int, height: int) -> tuple[int, int]:
    """The output's (width, height) for a first reference of that size: the preferred size
    nearest its (VAE-safe) aspect. diffusers: BriaFiboEditPipeline's `_auto_resize`."""
    safe_w, safe_h = reference_size(width, height)
    return min(PREFERRED_SIZES, key=lambda size: abs(size[0] / size[1] - safe_w / safe_h))


def _edit_json(prompt: str) -> bool:
    """Whether the prompt is JSON naming an "edit_instruction" (diffusers' check)."""
    try:
        return "edit_instruction" in prompt and json.loads(prompt) is not None
    except json.JSONDecodeError:
        return False


class BriaFiboEditPipeline(BriaFiboPipeline):
    """Bria FIBO Edit on gpustd: BriaFiboPipeline's parts, the pictures to edit as tokens."""

    def reference_tokens(self, images: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """The references' latent pixels (L, C) float32, one after another, and their
        positions (L, 3): reference k (from 1) at (k, row, column). diffusers:
        `prepare_reference_latents` for each."""
        vae = self.vae
        tokens, ids = [], []
        for index, image in enumerate(images, start=1):
            width, height = reference_size(*rgb_picture(image).size)
            pixels = to_unit_image(image, width, height)[:, :, None]  # one frame
            mean = vae.encode(asarray(pixels, dtype=vae.post_quant_conv.weight.dtype,
                                      device=vae.device))[0]
            latent = vae.normalize(mean).numpy().astype(np.float32)[0, :, 0]  # (C, h, w)
            channels, rows, columns = latent.shape
            tokens.append(latent.reshape(channels, -1).T)
            place = np.zeros((rows, columns, 3), np.float32)
            place[..., 0] = index
            place[..., 1], place[..., 2] = np.arange(rows)[:, None], np.arange(columns)[None, :]
            ids.append(place.reshape(-1, 3))
        return np.concatenate(tokens), np.concatenate(ids)

    def __call__(self, prompt: str | Sequence[str], *,  # type: ignore[override]
                 image: Any = None, negative_prompt: str | Sequence[str] = "",
                 height: int | None = None, width: int | None = None,
                 num_inference_steps: int = 30, guidance_scale: float = 5.0, seed: int = 0,
                 rng: str = "torch", max_sequence_length: int = MAX_SEQUENCE_LENGTH,
                 latents: np.ndarray | None = None, callback: StepCallback | None = None,
                 output_type: str = "np", mask: Any = None) -> np.ndarray:
        """Edited pictures for `prompt` (edit JSON captions, one or a list) of `image` (a
        picture, or a list: every one a reference), as BriaFiboPipeline's; height and width
        default to `edit_size` of the first picture. diffusers:
        `BriaFiboEditPipeline(prompt, image=, negative_prompt=, height=, width=,
        num_inference_steps=, guidance_scale=, generator=torch.Generator().manual_seed(seed),
        output_type="np").images`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        if mask is not None:
            raise ValueError("FIBO Edit's mask is not supported yet: leave it out and say the "
                             "region in the edit instruction")
        if not all(_edit_json(p) for p in prompts):
            raise ValueError("FIBO Edit reads an edit JSON caption: give a JSON object with "
                             "an \"edit_instruction\" key as the prompt")
        pictures = [] if image is None else list(image) if isinstance(image, list) else [image]
        if not pictures:
            raise ValueError("FIBO Edit edits a picture: give it as the image")
        if height is None or width is None:
            width, height = edit_size(*rgb_picture(pictures[0]).size)
        if height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise ValueError(f"height and width must be multiples of {self.vae_scale_factor}, "
                             f"got {height}x{width}")
        negatives = ([negative_prompt] * len(prompts) if isinstance(negative_prompt, str)
                     else list(negative_prompt))
        passes = [[self.encode_prompt(p, max_sequence_length) for p in prompts]]
        if guidance_scale > 1:
            passes.append([self.encode_prompt(p, max_sequence_length) for p in negatives])
        x = self._sample(passes, guidance_scale, height // self.vae_scale_factor,
                         width // self.vae_scale_factor, num_inference_steps,
                         generator=make_generator(rng, seed), latents=latents,
                         callback=callback, references=self.reference_tokens(pictures))
        return x if output_type == "latent" else self.decode(x)
