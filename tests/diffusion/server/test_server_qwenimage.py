"""Qwen-Image through the server like any model: listed by /sdapi/v1/sd-models, txt2img with
a WebUI sampler and its infotext, diffusers' picture with Euler and the CPU noise source (true
CFG with a negative prompt), and img2img with a WebUI sampler. The
WebUI samplers' Simple schedule is stretched to the scheduler's `shift_terminal` as diffusers
stretches each run's sigmas: their picture is diffusers' own."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
import diffusers
import torch
from qwenimage_tiny import QWENIMAGE_SCHEDULER, tiny_qwenimage_pipeline
from server_support import info, noise_picture, pixels, png_b64, serving

import gpucore

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

SMALL = {"width": 40, "height": 24, "steps": 2, "seed": 5}
PROMPT = "a red circle on a blue square, " * 6


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("qwen-image-server")
    reference = tiny_qwenimage_pipeline(root)
    with serving(root, "qwen-image") as client:
        yield client, reference


def test_qwenimage_through_the_api(served: tuple[Any, Any]) -> None:
    client, reference = served
    names = {item["model_name"] for item in client.get("/sdapi/v1/sd-models").json()}
    assert "qwen-image" in names
    # Euler over the Simple schedule at 2 steps is diffusers' schedule (stretched to
    # shift_terminal) and step; with the CPU noise source, QwenImagePipeline's picture
    response = client.post("/sdapi/v1/txt2img", json={
        "prompt": PROMPT, "negative_prompt": "a photo of a cat", "cfg_scale": 3,
        "sampler_name": "Euler", "override_settings": {"randn_source": "CPU"}, **SMALL})
    assert response.status_code == 200, response.text
    assert "Sampler: Euler, Schedule type: Simple, CFG scale: 3, Seed: 5" in (
        info(response)["infotexts"][0])
    ours = pixels(response.json()["images"][0]) / np.float32(255)

    def theirs() -> np.ndarray:
        images = reference(PROMPT, negative_prompt="a photo of a cat", true_cfg_scale=3.0,
                           height=24, width=40, num_inference_steps=2,
                           generator=torch.Generator().manual_seed(5), output_type="np").images
        return np.asarray(images[0])

    expected = theirs()
    assert np.abs(ours - expected).mean() < 0.01
    # the stretch matters: diffusers' picture without it is visibly another
    stretched = reference.scheduler
    reference.scheduler = diffusers.FlowMatchEulerDiscreteScheduler(
        **{**QWENIMAGE_SCHEDULER, "shift_terminal": None})
    try:
        assert np.abs(theirs() - expected).mean() > 0.01
    finally:
        reference.scheduler = stretched
    image = noise_picture(24, 40)
    response = client.post("/sdapi/v1/img2img", json={
        "prompt": "a red circle", "init_images": [png_b64(image)], "denoising_strength": 0.5,
        "sampler_name": "Euler", **SMALL})
    assert response.status_code == 200, response.text
    assert "Denoising strength: 0.5" in info(response)["infotexts"][0]
