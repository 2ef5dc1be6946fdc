"""Wan 2.2 Animate's inputs (pipelines.video.animate_inputs) against diffusers'
WanAnimatePipeline's own methods on torch CPU: the reflection padding, the segment starts, the
i2v mask, and a later segment's condition continuing from 5 frames (replace and animate)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from PIL import Image
from wan_animate_pipe_tiny import random_video

from diffusion.pipelines.video.animate_inputs import (
    animate_pixels,
    i2v_mask,
    reflect_indices,
    segment_condition,
    segment_starts,
)

HEIGHT, WIDTH = 16, 32


def _diffusers() -> Any:
    from diffusers import WanAnimatePipeline

    return WanAnimatePipeline


def test_padding_and_segments() -> None:
    """reflect_indices is pad_video_frames; segment_starts are __call__'s starts wherever its
    own assert lets it run (overlap < segment - overlap) and cover the video with 5 too."""
    pad = _diffusers().pad_video_frames
    for count, target in ((2, 7), (5, 13), (6, 6), (9, 4), (3, 20)):
        assert list(reflect_indices(count, target)) == pad(None, list(range(count)), target)
    for frames in range(2, 40):
        for segment, overlap in ((5, 1), (9, 1), (13, 5), (77, 1), (77, 5)):
            step = segment - overlap
            left = (frames - overlap) % step
            target = frames + (step - left if left else 0)
            if frames > overlap:
                assert segment_starts(frames, segment, overlap) == [
                    i * step for i in range(target // step)]
        starts = segment_starts(frames + 5, 9, 5)
        assert starts[-1] + 5 < frames + 5 <= starts[-1] + 9


def test_i2v_mask_equals_diffusers() -> None:
    rng = np.random.default_rng(0)
    fake = SimpleNamespace(vae_scale_factor_temporal=4)
    shades = rng.random((1, 1, 9, 2, 4)).astype(np.float32)
    for kept, pixels in ((0, None), (1, None), (5, None), (5, shades), (0, shades)):
        expected = _diffusers().get_i2v_mask(
            fake, 1, 3, 2, 4, kept, None if pixels is None else torch.from_numpy(pixels),
            torch.float32, "cpu").numpy()
        np.testing.assert_array_equal(i2v_mask(3, 2, 4, kept, pixels), expected)


@pytest.mark.parametrize("replace", [True, False])
def test_segment_condition_equals_diffusers(replace: bool) -> None:
    """A second segment of 9 frames (4-12 of a 10-frame video: reflected past its end)
    continuing from 5 random frames; its video and mask encoded by diffusers' VAE as
    `prepare_prev_segment_cond_latents` does (the background and mask read by diffusers' own
    video processors from frames of another size)."""
    from diffusers.video_processor import VideoProcessor
    from wan_tiny import tiny_wan_vae

    rng = np.random.default_rng(3 + replace)
    frames = 10
    background = random_video(rng, frames, 24, 40)
    mask = (random_video(rng, frames, 24, 40, 1) > 127).astype(np.uint8) * 255
    pictures = random_video(rng, 1, 20, 20)
    extra = {"background": background, "mask": mask} if replace else {}
    pixels = animate_pixels(pictures[0], random_video(rng, frames, 24, 40),
                            random_video(rng, frames, 8, 8), height=HEIGHT, width=WIDTH,
                            face_size=16, **extra)
    before = rng.uniform(-1, 1, (1, 3, 5, HEIGHT, WIDTH)).astype(np.float32)
    video, ours_mask = segment_condition(pixels, 4, 9, 5, before, 1, 8)
    vae = tiny_wan_vae()
    fake = SimpleNamespace(vae=vae, vae_scale_factor_spatial=8, vae_scale_factor_temporal=4)
    fake.get_i2v_mask = lambda *a, **k: _diffusers().get_i2v_mask(fake, *a, **k)
    padded = _diffusers().pad_video_frames

    def frames_of(video: np.ndarray, index: list[int]) -> list[Any]:
        return [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f)
                for f in video[padded(None, index, 13)][4:]]

    index = list(range(frames))
    more = {}
    if replace:
        more["background_video"] = VideoProcessor(vae_scale_factor=8).preprocess_video(
            frames_of(background, index), height=HEIGHT, width=WIDTH)
        more["mask_video"] = VideoProcessor(
            vae_scale_factor=8, do_normalize=False, do_convert_grayscale=True
        ).preprocess_video(frames_of(mask, index), height=HEIGHT, width=WIDTH)
    with torch.no_grad():
        expected = _diffusers().prepare_prev_segment_cond_latents(
            fake, torch.from_numpy(before), batch_size=1, segment_frame_length=9,
            start_frame=4, height=HEIGHT, width=WIDTH, prev_segment_cond_frames=5,
            task="replace" if replace else "animate", device="cpu", **more).numpy()
        mean = vae.encode(torch.from_numpy(video)).latent_dist.mode()
    config = vae.config
    latents = ((mean - torch.tensor(config.latents_mean).view(1, -1, 1, 1, 1))
               / torch.tensor(config.latents_std).view(1, -1, 1, 1, 1)).numpy()
    np.testing.assert_array_equal(ours_mask, expected[:, :4])
    np.testing.assert_allclose(latents, expected[:, 4:], atol=1e-5, rtol=0)
    if replace:  # the background's mask shows: kept (1) and made anew (0) both in frame 2
        assert 0 < ours_mask[0, 0, 2].mean() < 1
