"""Motif-Video's pipeline against diffusers' MotifVideoPipeline on PyTorch CPU float32 (a tiny
random folder of motif_tiny): T5Gemma 2 read at each prompt's kept tokens, the guider's CFG
with a negative prompt, FlowMatchEuler's sigmas shifted by the video's tokens, the Wan VAE's
decode; the prompt visibly steering the video; txt2vid from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from cli_support import cli_error, cli_ok, png_frames
from motif_tiny import tiny_motif_pipeline
from support import assert_close

import gpucore
from diffusion.pipelines.video.motif_video import MotifVideoPipeline, checked_guider

PROMPT = "a cat walks on the beach at sunset"
RUN: dict[str, Any] = {"height": 32, "width": 48, "num_inference_steps": 3,
                       "negative_prompt": "two birds"}
TOL = 2e-4  # of frames in [0, 1]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, Path]:
    """diffusers' video of PROMPT (its prompts padded to 512 tokens) and the folder."""
    root = tmp_path_factory.mktemp("motif")
    pipe = tiny_motif_pipeline(root)
    with torch.no_grad():
        out = pipe(prompt=PROMPT, **RUN, num_frames=5, output_type="np",
                   generator=torch.Generator().manual_seed(7))
    return np.asarray(out.frames), root / "motif"


@pytest.fixture(scope="module")
def ours(first_device: gpucore.Device, built: tuple[np.ndarray, Path]) -> MotifVideoPipeline:
    return MotifVideoPipeline.from_pretrained(built[1], device=first_device)


def test_motif_video_equals_diffusers(ours: MotifVideoPipeline,
                                      built: tuple[np.ndarray, Path]) -> None:
    expected, _ = built
    video = ours(PROMPT, **RUN, num_frames=5, seed=7)
    assert video.shape == expected.shape == (1, 5, 32, 48, 3)
    assert_close(video, expected, tol=TOL, atol=TOL)
    latents = ours([PROMPT, "the camera pans left to show a lighthouse"], **RUN, num_frames=5,
                   seed=7, output_type="latent")
    assert np.abs(latents[1] - latents[0]).mean() > 0.02 * np.abs(latents[0]).mean()


@pytest.mark.nodevice
def test_motif_guider_refusals() -> None:
    assert checked_guider({"guidance_scale": 5.0})["stop"] == 1.0
    with pytest.raises(ValueError, match="ClassifierFreeGuidance only"):
        checked_guider({"_class_name": "AdaptiveProjectedGuidance"})
    with pytest.raises(ValueError, match="guidance_rescale"):
        checked_guider({"guidance_rescale": 0.7})


def test_motif_video_from_the_cli(first_device: gpucore.Device,
                                  built: tuple[np.ndarray, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """txt2vid: diffusers' video as PNG frames; what Motif-Video does not take refused in one
    line."""
    expected, folder = built
    common = ("--model", str(folder), "--width", "48", "--height", "32", "--frames", "5",
              "--steps", "3", "--seed", "7", "--dtype", "float32", "--prompt", PROMPT,
              "--negative-prompt", "two birds")
    out, err = cli_ok(capsys, "txt2vid", *common, "-o", str(tmp_path / "video"))
    assert "seed: 7" in err
    assert np.abs(png_frames(out) - expected[0]).max() < 1 / 255
    for more, words in ((("--sampler", "Euler"), "FlowMatchEuler"),
                        (("--cfg-scale-2", "2"), "--cfg-scale-2 is for Wan models"),
                        (("--cache", "fbc"), "--cache: not supported")):
        # (.webp: an .mp4 would first need PyAV)
        assert words in cli_error(capsys, "txt2vid", *common, *more, "-o",
                                  str(tmp_path / "r.webp"))
    refused = cli_error(capsys, "txt2img", "--model", str(folder), "--prompt", PROMPT)
    assert "Motif-Video text-to-video model" in refused


def test_motif_image_to_video_equals_diffusers(first_device: gpucore.Device, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A MotifVideoImage2VideoPipeline folder: the picture's posterior draw as the first
    frame's condition, SigLIP's states of it before the prompt; the decoded video diffusers',
    img2vid's frames too; another picture changes the frames after the first."""
    from PIL import Image

    reference = tiny_motif_pipeline(tmp_path, i2v=True)
    ours = MotifVideoPipeline.from_pretrained(tmp_path / "motif-i2v", device=first_device)
    rng = np.random.default_rng(3)
    pictures = [Image.fromarray((rng.uniform(0, 1, (24, 40, 3)) * 255).astype(np.uint8))
                for _ in range(2)]
    video = ours(PROMPT, **RUN, num_frames=5, seed=7, image=pictures[0])
    with torch.no_grad():
        expected = reference(image=pictures[0], prompt=PROMPT, **RUN, num_frames=5,
                             output_type="np", generator=torch.Generator().manual_seed(7)).frames
    assert_close(video, np.asarray(expected), tol=TOL, atol=TOL)
    pictures[0].save(tmp_path / "in.png")
    out, _ = cli_ok(capsys, "img2vid", "--model", str(tmp_path / "motif-i2v"), "--image",
                    str(tmp_path / "in.png"), "--width", "48", "--height", "32", "--frames",
                    "5", "--steps", "3", "--seed", "7", "--dtype", "float32", "--prompt",
                    PROMPT, "--negative-prompt", "two birds", "-o", str(tmp_path / "i2v"))
    assert np.abs(png_frames(out) - np.asarray(expected)[0]).max() < 1 / 255
    other = ours(PROMPT, **RUN, num_frames=5, seed=7, image=pictures[1])
    assert np.abs(other[:, 1:] - video[:, 1:]).mean() > 0.02 * np.abs(video[:, 1:]).mean()
