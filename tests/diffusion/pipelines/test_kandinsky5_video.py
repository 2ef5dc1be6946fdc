"""Kandinsky 5 Video Lite (a Kandinsky5T2VPipeline folder): a tiny random one saved by diffusers
(kandinsky5_video_tiny), our frames against diffusers' on PyTorch CPU float32 with and without
CFG (its default negative prompt), the prompt visibly mattering; `txt2vid` with the family's
defaults; what is refused in one line before the weights load (NABLA attention, Wan's
options, pictures)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_frames
from PIL import Image

import gpucore
from diffusion.models.kandinsky5_prompt import VIDEO_TEMPLATE
from diffusion.pipelines.video.kandinsky5 import Kandinsky5VideoPipeline

RED = "a red circle on a blue square"
HORSE = "an astronaut riding a horse at night"
HEIGHT, WIDTH, FRAMES = 16, 32, 5  # 2 latent frames of 4 x 8 (the tiny VAE's 4x), 2 x 4 patches
# |ours - diffusers| in [0, 1], float32: measured 3e-5 mean, 1.6e-4 max (diffusers rounds the
# rotated q and k to bfloat16 even in float32)
MEAN, MAX = 1e-4, 6e-4
PNG = 0.01  # mean, through 8-bit PNG frames


@pytest.fixture
def tiny(tiny_kandinsky5_video: tuple[Path, Any]) -> tuple[Path, Any]:
    """(the folder, diffusers' Kandinsky5T2VPipeline of it): flow_fixtures'."""
    return tiny_kandinsky5_video


@pytest.fixture(scope="module")
def guided(tiny_kandinsky5_video: tuple[Path, Any]) -> np.ndarray:
    """diffusers' video of RED at its defaults (CFG 5, its negative prompt)."""
    return _diffusers(tiny_kandinsky5_video[1], RED, guidance_scale=5.0)


def _diffusers(reference: Any, prompt: str, **settings: Any) -> np.ndarray:
    with torch.no_grad():
        frames = reference(prompt, height=HEIGHT, width=WIDTH, num_frames=FRAMES,
                           num_inference_steps=2, generator=torch.Generator().manual_seed(7),
                           output_type="np", **settings).frames
    return np.asarray(frames[0])


def test_frames_equal_diffusers(first_device: gpucore.Device, tiny: tuple[Path, Any],
                                guided: np.ndarray) -> None:
    """CFG 5 against diffusers' default negative prompt, CFG 1 with none; the prompt and the
    negative pass visibly matter; the frames move."""
    folder, reference = tiny
    assert VIDEO_TEMPLATE == reference.prompt_template
    pipe = Kandinsky5VideoPipeline.from_pretrained(folder)
    size = {"height": HEIGHT, "width": WIDTH, "num_frames": FRAMES, "num_inference_steps": 2,
            "seed": 7}
    ours = pipe(RED, guidance_scale=5.0, **size)[0]
    assert ours.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert np.abs(ours - guided).mean() < MEAN
    assert np.abs(ours - guided).max() < MAX
    plain = pipe(RED, guidance_scale=1.0, **size)[0]
    expected = _diffusers(reference, RED, guidance_scale=1.0)
    assert np.abs(plain - expected).mean() < MEAN
    assert np.abs(plain - expected).max() < MAX
    assert np.abs(plain - ours).mean() > 100 * MEAN  # the negative pass matters
    other = pipe(HORSE, guidance_scale=1.0, **size)[0]
    assert np.abs(other - plain).mean() > 100 * MEAN  # the prompt matters
    # frames, not one repeated (measured 0.014 apart)
    assert np.abs(plain[1:] - plain[:1]).mean() > 50 * MEAN


def test_txt2vid(first_device: gpucore.Device, tiny: tuple[Path, Any], guided: np.ndarray,
                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`txt2vid` on the folder: diffusers' video with the family's CFG 5 and negative prompt
    when neither is given; an animated WebP at its 24 fps; First Block Cache skipping a step;
    Wan's options refused."""
    folder, _ = tiny
    common = ("txt2vid", "--model", str(folder), "--width", str(WIDTH), "--height",
              str(HEIGHT), "--frames", str(FRAMES), "--steps", "2", "--seed", "7", "--dtype",
              "float32", "--prompt", RED)
    out, err = cli_ok(capsys, *common, "-o", str(tmp_path / "red"))
    assert "seed: 7" in err and "txt2vid" in err
    ours = png_frames(out)
    assert np.abs(ours - guided).mean() < PNG
    out, _ = cli_ok(capsys, *common, "-o", str(tmp_path / "red.webp"))
    with Image.open(out) as video:
        video.seek(1)
        video.load()  # a frame's duration is read as it loads
        assert video.n_frames == FRAMES and video.info["duration"] == round(1000 / 24)
    # First Block Cache at a threshold a random tiny model passes: steps skipped, the video
    # changed
    cli_ok(capsys, *common, "--cfg-scale", "1", "--steps", "3", "-o", str(tmp_path / "plain"))
    _, cached = cli_ok(capsys, *common, "--cfg-scale", "1", "--steps", "3", "--cache",
                       "fbc:5", "-o", str(tmp_path / "cached"))
    assert "cache: fbc 5, 1/3 steps computed" in cached  # the first always runs
    assert np.abs(png_frames(tmp_path / "cached") - png_frames(tmp_path / "plain")).mean() > PNG
    for flags, message in ((("--lora", str(out)), "--lora is for Wan models"),
                           (("--lowvram",), "takes --offload"),
                           (("--cache", "teacache"), "runs First Block Cache"),
                           (("--sampler", "UniPC"), "flow-match Euler")):
        assert message in cli_error(capsys, *common, *flags, "-o", str(tmp_path / "x.webp"))
    assert not (tmp_path / "x.webp").exists()


@pytest.mark.nodevice
def test_refused_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder's index and transformer config alone: NABLA attention, img2vid and txt2img
    each refused in one line (no weights are read)."""
    folder = tmp_path / "k5"
    (folder / "transformer").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps(
        {"_class_name": "Kandinsky5T2VPipeline"}))
    (folder / "transformer" / "config.json").write_text(json.dumps(
        {"attention_type": "nabla", "visual_cond": True}))
    common = ("--model", str(folder), "--prompt", "x", "-o", str(tmp_path / "o.webp"))
    assert "sparse 'nabla' (NABLA) attention" in cli_error(capsys, "txt2vid", *common)
    Image.new("RGB", (32, 16)).save(tmp_path / "in.png")
    assert "makes videos from text only" in cli_error(
        capsys, "img2vid", *common, "--image", str(tmp_path / "in.png"))
    assert cli_error(capsys, "txt2img", "--model", str(folder), "--prompt", "x") == (
        f"error: {folder} is a Kandinsky 5 Video text-to-video model: make videos with "
        f"`python -m diffusion txt2vid --model {folder} --prompt ...`")
