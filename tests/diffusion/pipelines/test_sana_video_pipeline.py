"""SANA-Video's pipeline against diffusers' SanaVideoPipeline on PyTorch CPU float32 (a tiny
random folder of sana_video_tiny): Gemma 2 behind the video instruction, CFG with a negative
prompt, the folder's DPM-Solver++ on flow sigmas, the Wan VAE's decode; the prompt visibly
steering the video; resolution bins; txt2vid from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from cli_support import cli_error, cli_ok, png_frames
from sana_video_tiny import tiny_sana_video_pipeline
from support import assert_close

import gpucore
from diffusion.pipelines.video.sana_video import SanaVideoPipeline, video_bin

PROMPT = "a red fox runs through the snow"
RUN: dict[str, Any] = {"height": 32, "width": 64, "num_inference_steps": 3,
                       "guidance_scale": 4.0, "negative_prompt": "blurry"}
TOL = 2e-4  # of frames in [0, 1]: measured 4.0e-5 (the latents ~14: 3.1e-4 apart)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    root = tmp_path_factory.mktemp("sana-video")
    return tiny_sana_video_pipeline(root), root / "sana-video"


def _theirs(pipe: Any, **extra: Any) -> np.ndarray:
    with torch.no_grad():
        out = pipe(prompt=PROMPT, **RUN, frames=5, use_resolution_binning=False,
                   generator=torch.Generator().manual_seed(7), **extra)
    return np.asarray(out.frames)


@pytest.fixture(scope="module")
def ours(first_device: gpucore.Device, built: tuple[Any, Path]) -> SanaVideoPipeline:
    return SanaVideoPipeline.from_pretrained(built[1], device=first_device)


def test_sana_video_equals_diffusers(ours: SanaVideoPipeline, built: tuple[Any, Path]) -> None:
    reference, _ = built
    video = ours(PROMPT, **RUN, num_frames=5, seed=7, use_resolution_binning=False)
    expected = _theirs(reference, output_type="np")
    assert video.shape == expected.shape == (1, 5, 32, 64, 3)
    assert_close(video, expected, tol=TOL, atol=TOL)
    latents = ours([PROMPT, "a blue whale sings"], **RUN, num_frames=5, seed=7,
                   use_resolution_binning=False, output_type="latent")
    assert np.abs(latents[1] - latents[0]).mean() > 0.02 * np.abs(latents[0]).mean()


def test_sana_image_to_video_equals_diffusers(ours: SanaVideoPipeline,
                                              built: tuple[Any, Path]) -> None:
    """The same folder as SanaImageToVideoPipeline: the picture's latent frame held (timestep
    0), the rest drawn; the decoded video diffusers'; another picture changes the frames after
    the first."""
    import diffusers
    from PIL import Image

    reference, _ = built
    i2v = diffusers.SanaImageToVideoPipeline(**reference.components)
    rng = np.random.default_rng(3)
    pictures = [Image.fromarray((rng.uniform(0, 1, (32, 64, 3)) * 255).astype(np.uint8))
                for _ in range(2)]
    video = ours(PROMPT, **RUN, num_frames=5, seed=7, use_resolution_binning=False,
                 image=pictures[0])
    assert_close(video, _theirs(i2v, image=pictures[0], output_type="np"), tol=TOL, atol=TOL)
    other = ours(PROMPT, **RUN, num_frames=5, seed=7, use_resolution_binning=False,
                 image=pictures[1])
    assert np.abs(other[:, 1:] - video[:, 1:]).mean() > 0.02 * np.abs(video[:, 1:]).mean()


@pytest.mark.nodevice
def test_resolution_bins() -> None:
    """diffusers' nearest bins: 480p's default size stays, 720p's moves a square to 960."""
    assert video_bin(30, 480, 832) == (480, 832)
    assert video_bin(22, 700, 720) == (960, 960)
    assert video_bin(30, 1000, 500) == (896, 448)
    assert video_bin(8, 32, 48) is None


def test_sana_video_from_the_cli(first_device: gpucore.Device, built: tuple[Any, Path],
                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """txt2vid and img2vid: diffusers' videos as PNG frames; what SANA-Video does not take
    refused in one line; txt2img says to use txt2vid."""
    import diffusers
    from PIL import Image

    reference, folder = built
    common = ("--model", str(folder), "--width", "64", "--height", "32", "--frames", "5",
              "--steps", "3", "--cfg-scale", "4", "--seed", "7", "--dtype", "float32",
              "--prompt", PROMPT, "--negative-prompt", "blurry")
    out, err = cli_ok(capsys, "txt2vid", *common, "-o", str(tmp_path / "video"))
    assert "seed: 7" in err
    assert np.abs(png_frames(out) - _theirs(reference, output_type="np")[0]).max() < 1 / 255
    picture = (np.random.default_rng(1).uniform(0, 1, (32, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "in.png")
    out, _ = cli_ok(capsys, "img2vid", *common, "--image", str(tmp_path / "in.png"),
                    "-o", str(tmp_path / "i2v"))
    i2v = diffusers.SanaImageToVideoPipeline(**reference.components)
    expected = _theirs(i2v, image=Image.fromarray(picture), output_type="np")[0]
    assert np.abs(png_frames(out) - expected).max() < 1 / 255
    for more, words in ((("--sampler", "Euler"), "DPM-Solver++"),
                        (("--lowvram",), "a memory mode"),
                        (("--cache", "fbc"), "--cache: not supported")):
        assert words in cli_error(capsys, "txt2vid", *common, *more)
    refused = cli_error(capsys, "txt2img", "--model", str(folder), "--prompt", PROMPT)
    assert "SANA-Video text-to-video model" in refused
