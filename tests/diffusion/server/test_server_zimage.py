"""Z-Image through the server like any model: listed by /sdapi/v1/sd-models, txt2img with a
WebUI sampler and its infotext, diffusers' picture with Euler and the CPU noise source (with
CFG and a negative prompt), and img2img."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
import torch
from server_support import info, noise_picture, pixels, png_b64, serving
from zimage_tiny import tiny_zimage_pipeline

import gpucore

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

SMALL = {"width": 24, "height": 16, "steps": 2, "seed": 5}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("z-image-server")
    reference = tiny_zimage_pipeline(root)
    with serving(root, "z-image-turbo") as client:
        yield client, reference


def test_zimage_through_the_api(served: tuple[Any, Any]) -> None:
    client, reference = served
    names = {item["model_name"] for item in client.get("/sdapi/v1/sd-models").json()}
    assert "z-image-turbo" in names
    response = client.post("/sdapi/v1/txt2img", json={
        "prompt": "a red circle", "sampler_name": "Euler", "cfg_scale": 1, **SMALL})
    assert response.status_code == 200, response.text
    facts = info(response)
    assert "Sampler: Euler, Schedule type: Simple, CFG scale: 1, Seed: 5" in facts["infotexts"][0]
    # Euler over the Simple schedule at 2 steps is diffusers' schedule and step; with the CPU
    # noise source, ZImagePipeline's picture
    response = client.post("/sdapi/v1/txt2img", json={
        "prompt": "a red circle", "negative_prompt": "a photo of a cat", "cfg_scale": 3,
        "sampler_name": "Euler", "override_settings": {"randn_source": "CPU"}, **SMALL})
    assert response.status_code == 200, response.text
    ours = pixels(response.json()["images"][0]) / np.float32(255)
    expected = reference("a red circle", negative_prompt="a photo of a cat", guidance_scale=2.0,
                         height=16, width=24, num_inference_steps=2,
                         generator=torch.Generator().manual_seed(5), output_type="np").images[0]
    assert np.abs(ours - expected).mean() < 0.01
    # img2img at half strength
    image = noise_picture(16, 24)
    response = client.post("/sdapi/v1/img2img", json={
        "prompt": "a red circle", "init_images": [png_b64(image)], "denoising_strength": 0.5,
        "sampler_name": "Euler", "cfg_scale": 1, **SMALL})
    assert response.status_code == 200, response.text
    assert "Denoising strength: 0.5" in info(response)["infotexts"][0]
