"""Wan video-to-video: a tiny WanPipeline folder saved by diffusers, an input video re-noised to
where the denoising strength cuts the schedule and denoised with the prompt, equal to diffusers'
WanVideoToVideoPipeline of the same parts (the torch RNG's noise; the frames resized as its
video processor does); another video and another strength visibly change it; `txt2vid
--init-video DIR --denoising-strength S` gives diffusers' frames, its frame count and size taken
from the video; what is refused in one line before the model loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_frames
from PIL import Image
from wan_tiny import tiny_wan_pipeline, wave_video

import gpucore

PROMPT = "a red cube on a wooden table"
HEIGHT, WIDTH, FRAMES = 32, 48, 5
SETTINGS = dict(negative_prompt="blurry", num_inference_steps=4, guidance_scale=4.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The folder and diffusers' WanVideoToVideoPipeline of its parts (its prompt cleaning
    without ftfy, as WanPipeline's is where ftfy is not installed: the same for ASCII)."""
    import diffusers
    from diffusers.pipelines.wan import pipeline_wan, pipeline_wan_video2video

    root = tmp_path_factory.mktemp("tiny-wan-v2v")
    t2v = tiny_wan_pipeline(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline_wan_video2video, "prompt_clean", pipeline_wan.prompt_clean)
        yield root / "wan", diffusers.WanVideoToVideoPipeline(
            tokenizer=t2v.tokenizer, text_encoder=t2v.text_encoder,
            transformer=t2v.transformer, vae=t2v.vae, scheduler=t2v.scheduler)


def _diffusers(reference: Any, video: list[Image.Image], strength: float) -> np.ndarray:
    return reference(prompt=PROMPT, video=video, strength=strength, height=HEIGHT, width=WIDTH,
                     output_type="np", generator=torch.Generator().manual_seed(3),
                     **SETTINGS).frames[0]


def test_video2video_equals_diffusers(first_device: gpucore.Device,
                                      tiny: tuple[Path, Any]) -> None:
    """Strength 0.5 of 4 steps: UniPC's last 2 (its corrector too) from the video noised to
    the third sigma; a 40 x 24 video resized to 48 x 32. A step cache knows the 2 steps."""
    from diffusion.pipelines.video import WanPipeline, video_cache

    folder, reference = tiny
    pipe = WanPipeline.from_pretrained(folder, device=first_device)
    video = wave_video(1, 24, 40)

    def ours(frames: list[Image.Image], strength: float, **more: Any) -> np.ndarray:
        return pipe(PROMPT, video=frames, strength=strength, height=HEIGHT, width=WIDTH, seed=3,
                    **SETTINGS, **more)[0]

    # TeaCache counts the steps that run: the cut's last (here its second) always computes, so
    # at any threshold the 2 steps are diffusers'
    cache = video_cache("teacache:9", "cache", 4)
    made = ours(video, 0.5, cache=cache)
    assert [branch.steps for branch in cache.branches] == [2, 2]  # (the prompt's, the negative)
    assert cache.summary() == "teacache 9, 4/4 model calls computed"
    expected = _diffusers(reference, video, 0.5)
    assert made.shape == expected.shape == (FRAMES, HEIGHT, WIDTH, 3)
    error = np.abs(made - expected)
    assert error.mean() < 5e-6 and error.max() < 1e-4, (error.mean(), error.max())  # 1e-6, 1e-5
    # the strength and the video matter (strength 0.25: one step from the video half noised;
    # the tiny random VAE's frames move less with the latents than a trained one's)
    light = ours(video, 0.25)
    assert np.abs(light - made).mean() > 0.1
    assert np.abs(ours(wave_video(2, 24, 40), 0.25) - light).mean() > 0.012


def test_init_video_cli(first_device: gpucore.Device, tiny: tuple[Path, Any], tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    """`txt2vid --init-video DIR`: the video's 5 frames and 48 x 32 are the run's."""
    folder, reference = tiny
    video = wave_video(4, HEIGHT, WIDTH)
    (tmp_path / "in").mkdir()
    for i, frame in enumerate(video):
        frame.save(tmp_path / "in" / f"{i:05d}.png")
    out, _ = cli_ok(capsys, "txt2vid", "--model", str(folder), "--prompt", PROMPT,
                    "--negative-prompt", "blurry", "--init-video", str(tmp_path / "in"),
                    "--denoising-strength", "0.5", "--steps", "4", "--cfg-scale", "4",
                    "--seed", "3", "--dtype", "float32", "-o", str(tmp_path / "out"))
    made = png_frames(out)
    expected = _diffusers(reference, video, 0.5)
    assert made.shape == expected.shape
    assert np.abs(made - expected).max() < 1.01 / 255  # the PNGs' 8-bit rounding


@pytest.mark.nodevice
def test_init_video_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusion.cli import txt2vid

    monkeypatch.setattr(txt2vid, "MAX_FRAMES", 9)  # (the CLI's 1001, lowered: a cheap video)
    for name, frames, (width, height) in (("six", 6, (48, 32)), ("odd", 5, (40, 30)),
                                          ("long", 11, (16, 16))):
        (tmp_path / name).mkdir()
        for i, frame in enumerate(wave_video(0, height, width, frames)):
            frame.save(tmp_path / name / f"{i:05d}.png")
    base = ("txt2vid", "--model", str(tmp_path), "--prompt", "x", "--steps", "4")
    for argv, says in (
            (("--init-video", str(tmp_path / "six")),
             "has 6 frames; Wan makes 1 + 4k (1, 5, ..., 81): give --frames 5 to take its "
             "first 5"),
            (("--init-video", str(tmp_path / "odd")),
             "is 40x30; Wan's sides are multiples of 16: give --width 32 and --height 16 to "
             "resize it"),
            (("--init-video", str(tmp_path / "odd"), "--frames", "9"),
             "has 5 frames, fewer than --frames 9"),
            (("--denoising-strength", "0.5"), "--denoising-strength is for video-to-video"),
            (("--init-video", str(tmp_path / "six"), "--denoising-strength", "0.2"),
             "--denoising-strength 0.2 leaves none of 4 steps to run"),
            (("--init-video", str(tmp_path / "six"), "--denoising-strength", "1.5"),
             "--denoising-strength must be a number above 0, at most 1"),
            (("--init-video", str(tmp_path / "six"), "--control-video", str(tmp_path / "six")),
             "--init-video and --control-video do not go together"),
            (("--init-video", str(tmp_path / "long")),
             "has more than 9 frames: give --frames 9 (1 + 4k, up to 9) to take its first 9"),
            (("--init-video", str(tmp_path / "none")), "no such file or folder")):
        assert says in cli_error(capsys, *base, *argv)
