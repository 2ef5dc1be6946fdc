"""JoyImage Edit through the server like any edit model: /sdapi/v1/img2img with the init image
as the picture to edit and the prompt as the instruction, its sampler left to the family (the
folder's own), the picture diffusers' JoyImageEditPipeline's within the PNG's rounding;
/sdapi/v1/txt2img a picture of the prompt alone, diffusers' too; a denoising strength refused
in one line (422)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
import torch
from joyimage_tiny import tiny_joyimage  # noqa: F401 (a fixture)
from PIL import Image
from server_support import pixels, png_b64, serving

import gpucore

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

PROMPT = "make the cube blue"
SMALL = {"width": 48, "height": 32, "steps": 2, "cfg_scale": 4.0, "seed": 6,
         "override_settings": {"randn_source": "CPU"}}
TOL = 0.01  # mean |ours - diffusers| in [0, 1]: the PNG's rounding


def _diffusers(reference: Any, picture: Any) -> np.ndarray:
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    processor = reference.vae_image_processor
    processor.get_default_height_width = lambda image, height, width: (height, width)
    with pytest.MonkeyPatch.context() as patch, torch.no_grad():
        # the posterior's mean, as ours (diffusers draws from it without the generator)
        patch.setattr(DiagonalGaussianDistribution, "sample",
                      lambda self, generator=None: self.mode())
        images = reference(image=picture, prompt=PROMPT, height=32, width=48,
                           num_inference_steps=2, guidance_scale=4.0,
                           generator=torch.Generator().manual_seed(6), output_type="np").images
    return np.asarray(images[0])


def test_joyimage_through_the_api(tiny_joyimage: tuple[Path, Any]) -> None:  # noqa: F811
    folder, reference = tiny_joyimage
    rng = np.random.default_rng(8)
    picture = Image.fromarray((rng.random((32, 48, 3)) * 255).astype(np.uint8))
    with serving(folder.parent, folder.name) as client:
        response = client.post("/sdapi/v1/img2img", json={
            "prompt": PROMPT, "init_images": [png_b64(picture)], **SMALL})
        assert response.status_code == 200, response.text
        edited = pixels(response.json()["images"][0]) / np.float32(255)
        response = client.post("/sdapi/v1/txt2img", json={"prompt": PROMPT, **SMALL})
        assert response.status_code == 200, response.text
        drawn = pixels(response.json()["images"][0]) / np.float32(255)
        response = client.post("/sdapi/v1/img2img", json={
            "prompt": PROMPT, "init_images": [png_b64(picture)], "denoising_strength": 0.5,
            **SMALL})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "strength" in detail and "\n" not in detail, detail
    assert np.abs(edited - _diffusers(reference, picture)).mean() < TOL
    assert np.abs(drawn - _diffusers(reference, None)).mean() < TOL
