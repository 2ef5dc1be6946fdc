"""Wan VACE through `python -m diffusion txt2vid`: a tiny WanVACEPipeline folder saved by
diffusers, our frames equal to diffusers' (`--sampler diffusers --rng torch`) with a control
video (a folder of PNGs), a mask (a GIF) and a reference picture, and with no control at all
(its defaults: a gray video regenerated whole); another control video visibly changes the
video; what is refused in one line before the model loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_frames
from PIL import Image
from wan_vace_tiny import tiny_wan_vace_pipeline

import gpucore

PROMPT = "a red cube on a wooden table"
HEIGHT, WIDTH, FRAMES = 32, 48, 5
COMMON = ("--width", str(WIDTH), "--height", str(HEIGHT), "--frames", str(FRAMES),
          "--steps", "2", "--cfg-scale", "4", "--negative-prompt", "blurry", "--sampler",
          "diffusers", "--rng", "torch", "--seed", "3", "--dtype", "float32", "--prompt", PROMPT)


@pytest.fixture(scope="module")
def tiny_vace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("tiny-wan-vace")
    return root / "wan-vace", tiny_wan_vace_pipeline(root)


@pytest.fixture
def diffusers_prompts(monkeypatch: pytest.MonkeyPatch) -> None:
    """diffusers' VACE module calls ftfy unconditionally; WanPipeline's cleaning skips it when
    it is not installed (as here), and is the same for these ASCII prompts."""
    from diffusers.pipelines.wan import pipeline_wan, pipeline_wan_vace

    monkeypatch.setattr(pipeline_wan_vace, "prompt_clean", pipeline_wan.prompt_clean)


def _control(folder: Path, seed: int) -> list[Any]:
    """A random control video written as a folder of PNGs; its frames."""
    rng = np.random.default_rng(seed)
    frames = [Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
              for _ in range(FRAMES)]
    folder.mkdir()
    for i, frame in enumerate(frames):
        frame.save(folder / f"{i:05d}.png")
    return frames


def _expected(pipe: Any, **inputs: Any) -> np.ndarray:
    return pipe(PROMPT, negative_prompt="blurry", height=HEIGHT, width=WIDTH,
                num_frames=FRAMES, num_inference_steps=2, guidance_scale=4.0,
                output_type="np", generator=torch.Generator().manual_seed(3),
                **inputs).frames[0]


def test_vace_equals_diffusers(first_device: gpucore.Device, tiny_vace: tuple[Path, Any],
                               tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               diffusers_prompts: None) -> None:
    folder, reference = tiny_vace
    video = _control(tmp_path / "control", 1)
    rng = np.random.default_rng(2)
    # white (regenerate) and black (keep) 16-pixel blocks, another layout on each frame
    blocks = [np.kron(rng.choice(np.array([0, 255], np.uint8), (2, 3)),
                      np.ones((16, 16), np.uint8)) for _ in range(FRAMES)]
    mask = [Image.fromarray(b) for b in blocks]
    mask[0].save(tmp_path / "mask.gif", save_all=True, append_images=mask[1:], duration=100)
    picture = Image.fromarray(rng.integers(0, 256, (40, 24, 3), dtype=np.uint8))
    picture.save(tmp_path / "ref.png")
    vace = ("--control-mask", str(tmp_path / "mask.gif"), "--reference-image",
            str(tmp_path / "ref.png"), "--control-scale", "0.8")
    out, _ = cli_ok(capsys, "txt2vid", "--model", str(folder), *COMMON, "--control-video",
                    str(tmp_path / "control"), *vace, "-o", str(tmp_path / "ours"))
    ours = png_frames(out)
    expected = _expected(reference, video=video, mask=mask, reference_images=[picture],
                         conditioning_scale=0.8)
    assert ours.shape == expected.shape == (FRAMES, HEIGHT, WIDTH, 3)
    # measured: 7e-4 mean, 2.0e-3 worst (the PNGs' rounding, 1/510)
    assert np.abs(ours - expected).mean() < 1e-3
    assert np.abs(ours - expected).max() < 1 / 255
    # another control video, another video (two random ones differ little through the VAE:
    # 0.017; black and white frames by turns: 0.045 measured)
    other = tmp_path / "other"
    other.mkdir()
    for i in range(FRAMES):
        Image.new("RGB", (WIDTH, HEIGHT), (255,) * 3 if i % 2 else (0,) * 3).save(
            other / f"{i:05d}.png")
    out, _ = cli_ok(capsys, "txt2vid", "--model", str(folder), *COMMON, "--control-video",
                    str(other), *vace, "-o", str(tmp_path / "other-out"))
    assert np.abs(png_frames(out) - ours).mean() > 0.025


def test_vace_without_control(first_device: gpucore.Device, tiny_vace: tuple[Path, Any],
                              tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              diffusers_prompts: None) -> None:
    """No control given: diffusers' defaults (a gray video, all regenerated, no references);
    --lowvram (the main and the control blocks streamed) gives the same frames bitwise."""
    folder, reference = tiny_vace
    out, _ = cli_ok(capsys, "txt2vid", "--model", str(folder), *COMMON,
                    "-o", str(tmp_path / "plain"))
    ours, expected = png_frames(out), _expected(reference)
    assert np.abs(ours - expected).mean() < 1e-3
    assert np.abs(ours - expected).max() < 1 / 255
    out, _ = cli_ok(capsys, "txt2vid", "--model", str(folder), *COMMON, "--lowvram",
                    "-o", str(tmp_path / "lowvram"))
    assert np.array_equal(png_frames(out), ours)


def test_vace_a14b_equals_diffusers(first_device: gpucore.Device, tmp_path: Path,
                                    diffusers_prompts: None) -> None:
    """Wan 2.2 A14B's layout with VACE (two VACE experts, each encoding the control once, the
    low-noise one with its own guidance scale): WanVACEPipeline's frames."""
    from diffusion.pipelines.video import WanPipeline
    from diffusion.pipelines.video.vace_inputs import vace_pixels

    reference = tiny_wan_vace_pipeline(tmp_path, boundary_ratio=0.8)
    pipe = WanPipeline.from_pretrained(tmp_path / "wan-vace-a14b", device=first_device)
    rng = np.random.default_rng(6)
    video = rng.integers(0, 256, (FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)
    settings = dict(negative_prompt="blurry", height=HEIGHT, width=WIDTH, num_frames=FRAMES,
                    num_inference_steps=4, guidance_scale=4.0, guidance_scale_2=2.0)
    ours = pipe(PROMPT, seed=3, control=vace_pixels(HEIGHT, WIDTH, FRAMES, video=video),
                **settings)[0]
    expected = reference(PROMPT, video=[Image.fromarray(f) for f in video], output_type="np",
                         generator=torch.Generator().manual_seed(3), **settings).frames[0]
    assert np.abs(ours - expected).max() < 1e-4  # measured 7.9e-6


def test_refusals(tiny_vace: tuple[Path, Any], tmp_path: Path,
                  capsys: pytest.CaptureFixture[str]) -> None:
    """Each refused in one line before the model loads."""
    folder, _ = tiny_vace
    plain = tmp_path / "plain-wan"  # the same parts under a WanPipeline model_index.json
    shutil.copytree(folder, plain)
    index = json.loads((plain / "model_index.json").read_text())
    (plain / "model_index.json").write_text(json.dumps({**index, "_class_name": "WanPipeline"}))
    video = tmp_path / "control"
    _control(video, 1)
    six = tmp_path / "six"
    shutil.copytree(video, six)
    shutil.copy(video / "00000.png", six / "00005.png")
    Image.new("RGB", (WIDTH, HEIGHT)).save(tmp_path / "in.png")
    for argv, message in (
            (("--model", str(plain), "--control-video", str(video)),
             "--control-video needs a Wan VACE model"),
            (("--model", str(plain), "--reference-image", str(tmp_path / "in.png")),
             "--reference-image needs a Wan VACE model"),
            (("--model", str(folder), "--control-mask", str(video)),
             "--control-mask needs --control-video"),
            (("--model", str(folder), "--control-video", str(six)),
             f"--control-video {six} has 6 frames but --frames is 5"),
            (("--model", str(folder), "--control-video", str(tmp_path / "none.mp4")),
             "no such file or folder"),
            (("--model", str(folder), "--control-video", str(tmp_path / "in.png"),
              "--control-scale", "11"), "--control-scale must be a number from 0 to 10")):
        error = cli_error(capsys, "txt2vid", *COMMON, *argv, "-o", str(tmp_path / "o"))
        assert message in error, error
    error = cli_error(capsys, "img2vid", "--model", str(folder), "--image",
                      str(tmp_path / "in.png"), *COMMON, "-o", str(tmp_path / "o"))
    assert "Wan VACE takes no first frame" in error, error
