"""Cosmos Predict2 Video2World's pipeline against diffusers' Cosmos2VideoToWorldPipeline on
PyTorch CPU float32 (a tiny random folder of cosmos_tiny): a 7-frame video's 2 latent frames
held (a sample of the VAE's posterior drawn from the seed before the noise), CFG with Cosmos'
default negative prompt; the video visibly steering the latents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
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
