"""Cosmos Predict2 Video2World's pipeline against diffusers' Cosmos2VideoToWorldPipeline on
PyTorch CPU float32 (a tiny random folder of cosmos_tiny): a 7-frame video's 2 latent frames
held (a sample of the VAE's posterior drawn from the seed before the noise), CFG with Cosmos'
default negative prompt; the video visibly steering the latents; img2vid from the command
line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from cli_support import cli_error, cli_ok, png_frames
from cosmos_tiny import tiny_cosmos2_v2w_pipeline
from support import assert_close

import gpucore
from diffusion.pipelines.video.cosmos2_video2world import Cosmos2VideoToWorldPipeline

PROMPT = "a robot arm stacks red blocks"


def test_cosmos2_video2world_equals_diffusers(first_device: gpucore.Device,
                                              tmp_path: Path) -> None:
    from PIL import Image

    reference = tiny_cosmos2_v2w_pipeline(tmp_path)
    ours = Cosmos2VideoToWorldPipeline.from_pretrained(tmp_path / "cosmos2-v2w",
                                                       device=first_device)
    rng = np.random.default_rng(0)
    video = (rng.uniform(0, 1, (2, 7, 32, 48, 3)) * 255).astype(np.uint8)
    run = {"height": 32, "width": 48, "num_frames": 9, "num_inference_steps": 2,
           "guidance_scale": 3.0}
    with torch.no_grad():
        expected = reference(prompt=PROMPT, video=[Image.fromarray(f) for f in video[0]],
                             **run, generator=torch.Generator().manual_seed(7),
                             output_type="latent").frames.numpy()
    latents = ours(PROMPT, video[:1] / 255, **run, seed=7, output_type="latent")
    assert_close(latents, expected, tol=1e-4)  # of latents ~11: measured 1.7e-5
    other = ours(PROMPT, video[1:] / 255, **run, seed=7, output_type="latent")
    assert np.abs(other - latents)[:, :, 2:].mean() > 0.02 * np.abs(latents).mean()


def test_cosmos2_video2world_from_the_cli(first_device: gpucore.Device, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """img2vid: the picture held, diffusers' `image=` video as PNG frames; txt2vid without a
    picture or a video, or with a video that fills the frames made, and txt2img refused in one
    line."""
    from PIL import Image

    reference = tiny_cosmos2_v2w_pipeline(tmp_path)
    picture = (np.random.default_rng(1).uniform(0, 1, (32, 48, 3)) * 255).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "in.png")
    common = ("--model", str(tmp_path / "cosmos2-v2w"), "--width", "48", "--height", "32",
              "--frames", "9", "--steps", "2", "--cfg-scale", "3", "--seed", "7",
              "--dtype", "float32", "--prompt", PROMPT)
    out, _ = cli_ok(capsys, "img2vid", *common, "--image", str(tmp_path / "in.png"),
                    "-o", str(tmp_path / "i2w"))
    with torch.no_grad():
        expected = reference(prompt=PROMPT, image=Image.fromarray(picture), height=32,
                             width=48, num_frames=9, num_inference_steps=2,
                             guidance_scale=3.0, generator=torch.Generator().manual_seed(7),
                             output_type="np").frames[0]
    # diffusers passes its frames through the safety checker as 8-bit, truncated: a level
    assert np.abs(png_frames(out) - np.asarray(expected)).max() <= 1 / 255 + 1e-6
    assert "give img2vid --image" in cli_error(capsys, "txt2vid", *common)
    (tmp_path / "long").mkdir()
    for i in range(9):
        Image.fromarray(picture).save(tmp_path / "long" / f"{i:05d}.png")
    refused = cli_error(capsys, "txt2vid", *common, "--init-video", str(tmp_path / "long"))
    assert "its last 9 frames fill the 9 made" in refused
    refused = cli_error(capsys, "txt2img", "--model", str(tmp_path / "cosmos2-v2w"),
                        "--prompt", PROMPT)
    assert "Cosmos Predict2 Video2World image-to-video model" in refused
