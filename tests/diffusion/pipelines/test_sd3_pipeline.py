"""SD3.5 txt2img with guidance against diffusers' StableDiffusion3Pipeline on tiny random
models: the same seed through torch's CPU generator gives the same picture."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from flow_tiny import tiny_sd3_pipeline
from support import assert_close

import gpucore
from diffusion.pipelines.sd3 import StableDiffusion3Pipeline

TOL = 2e-3  # the SD pipeline tests' picture tolerance, f32 through every step


def test_sd35_txt2img_matches_diffusers(first_device: gpucore.Device, tmp_path: Path) -> None:
    """One adapter: the MMDiT's kernels run on every adapter in tests/diffusion/models."""
    reference = tiny_sd3_pipeline(tmp_path)
    settings = dict(height=16, width=24, num_inference_steps=3, guidance_scale=4.5,
                    max_sequence_length=12)
    prompts = ["a red circle on a blue background", "a cat"]
    expected = reference(prompts, negative_prompt="a dog",
                         generator=torch.Generator().manual_seed(11), output_type="np",
                         **settings).images
    ours = StableDiffusion3Pipeline.from_pretrained(tmp_path / "sd3", device=first_device)
    assert_close(ours(prompts, negative_prompt="a dog", seed=11, **settings), expected, tol=TOL)
