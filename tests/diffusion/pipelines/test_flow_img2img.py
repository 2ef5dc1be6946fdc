"""FLUX and SD3 inpaint against diffusers' FluxInpaintPipeline / StableDiffusion3InpaintPipeline
on tiny random models: the init image's latents noised to the schedule's first kept sigma (all
of img2img), the kept part put back after every step, every draw from one torch CPU
generator. (Img2img is the same start without the blend: FlowStart without a mask.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
from flow_tiny import tiny_sd3_pipeline
from PIL import Image
from support import assert_close

import gpucore
from diffusion.pipelines.flow.flux import FluxPipeline
from diffusion.pipelines.flow.sd3 import StableDiffusion3Pipeline

TOL = 2e-3  # the SD pipeline tests' picture tolerance


def _image_and_mask(width: int, height: int) -> tuple[Image.Image, Image.Image]:
    pixels = np.random.default_rng(3).integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4: 3 * height // 4, width // 3:] = 255
    return Image.fromarray(pixels), Image.fromarray(mask)


def test_flux_inpaint_matches_diffusers(first_device: gpucore.Device,
                                        tiny_flux_dev: tuple[Path, Any]) -> None:
    """dev (guidance embedding, the resolution-dependent shift); strength 0.6 of 4 steps."""
    tmp_path, reference = tiny_flux_dev
    image, mask = _image_and_mask(24, 16)
    settings = dict(height=16, width=24, num_inference_steps=4, guidance_scale=3.5,
                    max_sequence_length=16, strength=0.6)
    extra = {"mask_image": mask}
    expected = diffusers.FluxInpaintPipeline(**reference.components)(
        "a red circle", image=image, generator=torch.Generator().manual_seed(5),
        output_type="np", **settings, **extra).images
    ours = FluxPipeline.from_pretrained(tmp_path / "flux", device=first_device)
    assert_close(ours("a red circle", image=image, seed=5, **settings, **extra), expected,
                 tol=TOL)


def test_sd3_inpaint_matches_diffusers(first_device: gpucore.Device, tmp_path: Path) -> None:
    """16-channel latents (diffusers blends the kept part only for those), guidance 4.5. The
    final latents are compared: diffusers 0.42's SD3 inpainting decodes without the VAE's
    shift_factor (its img2img and our decode add it)."""
    reference = tiny_sd3_pipeline(tmp_path, latent_channels=16)
    image, mask = _image_and_mask(24, 16)
    settings = dict(height=16, width=24, num_inference_steps=4, guidance_scale=4.5,
                    max_sequence_length=12, strength=0.75)
    extra = {"mask_image": mask}
    expected = diffusers.StableDiffusion3InpaintPipeline(**reference.components)(
        "a red circle", negative_prompt="a dog", image=image,
        generator=torch.Generator().manual_seed(8), output_type="latent", **settings,
        **extra).images.numpy()
    ours = StableDiffusion3Pipeline.from_pretrained(tmp_path / "sd3", device=first_device)
    assert_close(ours("a red circle", negative_prompt="a dog", image=image, seed=8,
                      output_type="latent", **settings, **extra), expected, tol=TOL)
