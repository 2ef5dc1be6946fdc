"""Wan video-to-video, the video counterpart of img2img: the input video's frames resized to
the run's size (Lanczos, to [-1, 1]), through the VAE (its posterior's mean, normalized) and
noised to the first timestep a denoising strength keeps (wan_schedule.strength_timesteps); the
prompt's denoising runs the rest of the schedule from there. diffusers:
`WanVideoToVideoPipeline(video=, strength=)`: its video processor's `preprocess_video`,
`prepare_latents` (`retrieve_latents(..., sample_mode="argmax")`, then the scheduler's
`add_noise` of the seed's noise at `timesteps[:1]`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...models.wan_vae import AutoencoderKLWan
from .wan_image import _latents, resized_pixels

__all__ = ["fit_init_video", "refuse_video2video", "video_pixels", "video_start"]


def refuse_video2video(*, image: bool, vace: bool, conditioned: bool) -> None:
    """ValueError in one line for an input video with what it cannot join: a first frame to
    animate (`image`), a Wan VACE model (`vace`: its control video edits a video) or an
    image-to-video model (`conditioned`: it reads a first frame)."""
    if image:
        raise ValueError("an init video and a first frame to animate do not go together: give "
                         "one of them")
    if vace:
        raise ValueError("a Wan VACE model edits a video through its control video and "
                         "mask, not an init video")
    if conditioned:
        raise ValueError("an init video is for Wan's text-to-video models; this one is "
                         "image-to-video")


def fit_init_video(frames: Sequence[Any], name: str, *, count: int | None,
                   width: int | None, height: int | None, most: int, multiple: int = 16,
                   option: str = "--{} {}") -> tuple[list[Any], int, int]:
    """(the frames a run takes, width, height) of an init video's `frames` (PIL images, read
    up to `most` + 1; `name` says it in messages): its first `count` (None: all, which must be
    1 + 4k and at most `most`), at the size given, a side not given the video's (refused
    unless a multiple of `multiple`).
    ValueError in one line saying what to give, each setting as `option` writes it ("--{}
    {}": "--frames 29")."""
    total = len(frames)
    if count is not None and count > total:
        raise ValueError(f"{name} has {total} frames, fewer than {option.format('frames', count)}"
                         ": ask for fewer frames or give a longer video")
    if count is None and total > most:  # suggested: Wan's 81 frames, or fewer where fewer fit
        use = (min(81, most) - 1) // 4 * 4 + 1
        raise ValueError(f"{name} has more than {most} frames: give "
                         f"{option.format('frames', use)} (1 + 4k, up to {most}) to take its "
                         f"first {use}")
    if count is None and (total - 1) % 4:
        use = (total - 1) // 4 * 4 + 1
        raise ValueError(f"{name} has {total} frames; Wan makes 1 + 4k (1, 5, ..., 81): give "
                         f"{option.format('frames', use)} to take its first {use}")
    own_width, own_height = frames[0].size
    sides = [own if given is None else given
             for given, own in ((width, own_width), (height, own_height))]
    if any(given is None and side % multiple for given, side in zip((width, height), sides)):
        fit = [max(multiple, side // multiple * multiple) for side in sides]
        raise ValueError(f"{name} is {own_width}x{own_height}; Wan's sides are multiples of "
                         f"{multiple}: give {option.format('width', fit[0])} and "
                         f"{option.format('height', fit[1])} to resize it")
    return list(frames[:count]), sides[0], sides[1]


def video_pixels(frames: Sequence[Any], height: int, width: int) -> np.ndarray:
    """(1, 3, T, height, width) in [-1, 1] of `frames` (PIL images or (H, W, 3) uint8), each
    resized to width x height with Lanczos. diffusers: `VideoProcessor.preprocess_video(video,
    height=, width=)`."""
    return np.stack([resized_pixels(f, height, width) for f in frames]).transpose(3, 0, 1, 2)[None]


def video_start(vae: AutoencoderKLWan, frames: Sequence[Any], height: int, width: int,
                noise: np.ndarray, scheduler: Any, timestep: Any) -> np.ndarray:
    """The latents a video-to-video run starts from, float32 like `noise` (B, C, F, h, w):
    the normalized posterior means of `frames` (video_pixels) noised by `scheduler` to
    `timestep`, the first it steps (flow schedules: (1 - sigma) x0 + sigma noise)."""
    video = _latents(vae, video_pixels(frames, height, width))
    if video.shape[1:] != noise.shape[1:]:  # not a Wan 2.1 / 2.2 transformer's own latents
        raise ValueError(f"the init video's latents {video.shape[1:]} do not fit the "
                         f"transformer's {noise.shape[1:]}")
    start = scheduler.add_noise(video, noise, np.full(len(noise), float(timestep)))
    return np.asarray(start, np.float32)
