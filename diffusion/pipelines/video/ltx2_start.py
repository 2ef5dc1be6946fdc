"""Where an LTX-2 generation starts, as diffusers' LTX2ImageToVideoPipeline and the second
stage of its two-stage recipe start it.

Image to video: the picture re-compressed as one H.264 frame at `crf` (LTX-2 was trained on
such frames: 33, LTX-2.5's Gemma 4 generation 18; 0 skips it), resized to the video's size
(PIL bilinear, no crop: diffusers' VideoProcessor.preprocess), encoded by the video VAE (the
posterior's mean) and normalized; that latent frame replaces the noise of latent frame 0, whose
tokens stay clean: the transformer reads them at timestep 0 (the per-token timestep
t (1 - mask)) and the scheduler's step leaves them as they are.

A second stage starts from the first's latents (upsampled) rather than noise: both streams'
latents re-noised to `noise_scale` (the first of its sigmas), image to video's latent frame 0
kept clean."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpustd import asarray

from .ltx2_guidance import pack_video

__all__ = ["STAGE_2_SIGMAS", "LTX2Latents", "default_crf", "first_frame_mask", "image_latents",
           "pack_audio", "recompressed", "renoised", "restart"]

# diffusers' STAGE_2_DISTILLED_SIGMA_VALUES: the refining stage's schedule, used as given
STAGE_2_SIGMAS = (0.909375, 0.725, 0.421875)


@dataclass
class LTX2Latents:
    """A denoised generation before its decode: the video latents (B, C, F, h, w) and the
    audio tokens (B, L, C' M) as the transformer reads them (normalized), the generator the
    run drew from (a decode or a second stage draws on from it), and whether latent frame 0
    is a kept first frame (image to video)."""

    video: np.ndarray
    audio: np.ndarray
    generator: Any
    first_frame: bool


def default_crf(text_encoder_config: dict[str, Any]) -> int:
    """The H.264 CRF LTX-2's image conditioning was trained with: 18 for LTX-2.5 (its text
    encoder Gemma 4), 33 before. diffusers: `resolve_default_image_crf`."""
    return 18 if str(text_encoder_config.get("model_type", "")).startswith("gemma4") else 33


def recompressed(pixels: np.ndarray, crf: int) -> np.ndarray:
    """(H, W, 3) uint8 through one yuv420p H.264 frame at `crf` (preset veryfast), its sides
    cut to even, and back to RGB: the compression LTX-2's conditioning frames had. diffusers:
    `apply_image_conditioning_crf`."""
    try:
        import av
    except ImportError:
        raise ValueError("LTX-2's image to video re-compresses its picture with PyAV's H.264: "
                         "pip install 'avx-gpu[video]', or give image_crf=0") from None

    height, width = pixels.shape[0] // 2 * 2, pixels.shape[1] // 2 * 2
    pixels = np.ascontiguousarray(pixels[:height, :width])
    with io.BytesIO() as file:
        container = av.open(file, "w", format="mp4")
        try:
            stream = container.add_stream("libx264", rate=1,
                                          options={"crf": str(crf), "preset": "veryfast"})
            stream.height, stream.width = height, width
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="yuv420p")
            container.mux(stream.encode(frame))
            container.mux(stream.encode())
        finally:
            container.close()
        data = file.getvalue()
    with io.BytesIO(data) as file, av.open(file, "r") as source:
        return next(source.decode(video=0)).to_ndarray(format="rgb24")


def image_latents(vae: Any, image: Any, height: int, width: int, crf: int) -> np.ndarray:
    """The normalized latent frame (1, C, 1, h, w) float32 of `image` (a PIL image or an
    (H, W, 3) uint8 array) as the first frame of a `height` x `width` video (module docstring).
    diffusers: LTX2ImageToVideoPipeline's `video_processor.preprocess` then
    `prepare_latents`' `vae.encode(...).latent_dist.mode()` normalized."""
    from PIL import Image

    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    if crf:
        picture = Image.fromarray(recompressed(np.asarray(picture.convert("RGB")), crf))
    resized = picture.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(resized, np.float32) / 255 * 2 - 1
    video = pixels.transpose(2, 0, 1)[None, :, None]  # (1, 3, 1, H, W)
    place = vae.latents_mean  # the VAE's dtype and device
    z = np.asarray(vae.encode(asarray(video, dtype=place.dtype, device=place.device)).numpy(),
                   np.float32)
    # normalized on the host: a memory mode may have sent the VAE's weights back there
    mean, std = (np.asarray(p.numpy(), np.float32).reshape(1, -1, 1, 1, 1)
                 for p in (vae.latents_mean, vae.latents_std))
    return ((z - mean) * np.float32(vae.scaling_factor) / std).astype(np.float32)


def first_frame_mask(batch: int, grid: tuple[int, int, int]) -> np.ndarray:
    """(B, F h w) float32: 1 on latent frame 0's tokens, 0 elsewhere (packed as the video's
    tokens). diffusers: `conditioning_mask[:, :, 0] = 1` packed."""
    mask = np.zeros((batch, *grid), np.float32)
    mask[:, 0] = 1.0
    return mask.reshape(batch, -1)


def renoised(latents: np.ndarray, noise_scale: Any, generator: Any) -> np.ndarray:
    """noise_scale noise + (1 - noise_scale) latents, the noise drawn from `generator` in the
    latents' shape (`noise_scale` a number or an array that broadcasts). diffusers:
    `_create_noised_state`."""
    noise = generator.standard_normal(latents.shape).astype(np.float32)
    scale = np.asarray(noise_scale, np.float32)
    return (scale * noise + (1 - scale) * latents).astype(np.float32)


def pack_audio(latents: np.ndarray) -> np.ndarray:
    """(B, C, L, M) -> tokens (B, L, C M). diffusers: `_pack_audio_latents`."""
    b, _, frames, _ = latents.shape
    return np.ascontiguousarray(latents.transpose(0, 2, 1, 3)).reshape(b, frames, -1)


def restart(start: LTX2Latents, video_shape: tuple[int, ...], audio_shape: tuple[int, ...],
             kept: np.ndarray | None, noise_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """A second stage's packed (video, audio) latents: `start`'s re-noised to `noise_scale`
    (a kept first frame not), the video's noise drawn first; ValueError in one line where
    they are not the run's shapes."""
    b, c, length, m = audio_shape
    if start.video.shape != video_shape or start.audio.shape != (b, length, c * m):
        raise ValueError(f"the second stage's latents {start.video.shape} and audio "
                         f"{start.audio.shape} are not this run's {video_shape} and "
                         f"{(b, length, c * m)}: give its size, frames and frame rate")
    scale: Any = noise_scale
    if kept is not None:  # diffusers: noise_scale * (1 - conditioning_mask)
        scale = noise_scale * (1 - kept.reshape(1, 1, *video_shape[2:]))
    video = pack_video(renoised(start.video, scale, start.generator))
    return video, renoised(start.audio, noise_scale, start.generator)
