"""LTX-2's two-stage run, as diffusers' LTX-2 documentation recommends it: the video (and its
audio) generated at half the width and height, its latents doubled by the latent upsampler
(models.ltx2_upsampler, on the VAE's unnormalized latents: diffusers' LTX2LatentUpsamplePipeline
with `output_type="latent"`), then a short second denoise at the full size: both streams
re-noised to the first of diffusers' STAGE_2_DISTILLED_SIGMA_VALUES (0.909375, 0.725,
0.421875) and stepped over them as given, image to video's first latent frame kept. The second
stage runs unguided (one pass a step), as Lightricks' reference runs it; the generator runs on
from the first stage, so a seed gives diffusers' video when its two calls share one generator.
The distilled models (or the distilled LoRA) are what these three steps are made for.

    upsampler = load_upsampler("LTX-2", device=device)
    out = two_stage(pipe, upsampler, "a fox runs through snow", height=512, width=768, seed=7)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device

from ...loaders.ltx2.upsampler import load_ltx2_upsampler
from ...models.ltx2_upsampler import LTX2LatentUpsamplerModel
from .ltx2 import LTX2Output, LTX2Pipeline
from .ltx2_guidance import LTX2Guidance
from .ltx2_start import STAGE_2_SIGMAS, LTX2Latents

__all__ = ["UNGUIDED", "load_upsampler", "two_stage", "upsample_latents"]

# every guidance off, for both streams (LTX2Guidance's audio scales fall back with `or`, so
# they are set too)
UNGUIDED = LTX2Guidance(guidance_scale=1.0, stg_scale=0.0, modality_scale=1.0,
                        guidance_rescale=0.0, audio_guidance_scale=1.0, audio_stg_scale=0.0,
                        audio_modality_scale=1.0, audio_guidance_rescale=0.0)


def load_upsampler(path: str | Path, *, dtype: Any = np.float32,
                   device: Device | None = None) -> LTX2LatentUpsamplerModel:
    """The latent upsampler at `path` (an LTX-2 folder with latent_upsampler/, that folder,
    or Lightricks' single file; loaders.ltx2.upsampler) on `device` in `dtype`."""
    weights = load_ltx2_upsampler(path)
    model = LTX2LatentUpsamplerModel(weights.config, dtype=dtype,
                                     device=device or default_device())
    model.load_state_dict(weights)
    return model


def upsample_latents(pipe: LTX2Pipeline, upsampler: LTX2LatentUpsamplerModel,
                     latents: np.ndarray) -> np.ndarray:
    """The transformer's (normalized) latents (B, C, F, h, w) at twice the height and width:
    denormalized, upsampled, normalized again. diffusers: `LTX2LatentUpsamplePipeline(
    latents=denormalized, output_type="latent")`, then the next pipeline's normalize."""
    vae = pipe.vae
    with pipe.on_gpu(vae):
        mean, std = (np.asarray(p.numpy(), np.float32).reshape(1, -1, 1, 1, 1)
                     for p in (vae.latents_mean, vae.latents_std))
    scale = np.float32(vae.scaling_factor)
    raw = (latents * std / scale + mean).astype(np.float32)
    up = np.asarray(upsampler(raw).numpy(), np.float32)
    return ((up - mean) * scale / std).astype(np.float32)


def two_stage(pipe: LTX2Pipeline, upsampler: LTX2LatentUpsamplerModel,
              prompt: str | Sequence[str], *, height: int = 512, width: int = 768,
              image: Any = None, sigmas: Sequence[float] = STAGE_2_SIGMAS,
              decode_timestep: float = 0.0, decode_noise_scale: float | None = None,
              audio: bool = True, **settings: Any) -> LTX2Output:
    """A `height` x `width` video (and audio) of `prompt` in two stages (module docstring).
    `settings`: the first stage's (LTX2Pipeline.denoise's: negative_prompt, num_frames,
    frame_rate, num_inference_steps, guidance, seed, rng, image_crf, callback...); the second
    takes its prompt, frames and frame rate. ValueError in one line where the half size is
    not the VAE's multiple."""
    multiple = 2 * int(pipe.vae.spatial_compression_ratio)
    if height % multiple or width % multiple:
        raise ValueError(f"a two-stage LTX-2 run's width and height must be multiples of "
                         f"{multiple} (the first stage makes half of each), got "
                         f"{width}x{height}")
    first = pipe.denoise(prompt, image=image, height=height // 2, width=width // 2,
                         **settings)
    upsampled = upsample_latents(pipe, upsampler, first.video)
    start = LTX2Latents(upsampled, first.audio, first.generator, first.first_frame)
    keep = ("negative_prompt", "num_frames", "frame_rate", "max_sequence_length", "callback")
    second = pipe.denoise(prompt, image=image, height=height, width=width, guidance=UNGUIDED,
                          start=start, sigmas=sigmas,
                          **{k: v for k, v in settings.items() if k in keep})
    return pipe.finish(second, decode_timestep, decode_noise_scale, audio)
