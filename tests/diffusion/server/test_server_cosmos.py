"""Cosmos Predict2 Text2Image through the server like any model: listed by
/sdapi/v1/sd-models, txt2img with its own sampler ("diffusers") and the CPU noise source
within a level of diffusers' picture (CFG 3 with Cosmos' default negative prompt), a WebUI
sampler refused in one line (422) before anything runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
import torch
from cosmos_tiny import tiny_cosmos2_t2i_pipeline
from server_support import info, pixels, serving

import gpucore

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

SMALL = {"width": 48, "height": 32, "steps": 3, "seed": 7}
PROMPT = "a red circle on a blue square"


def test_cosmos2_text2image_through_the_api(tmp_path: Path) -> None:
    reference = tiny_cosmos2_t2i_pipeline(tmp_path)
    with serving(tmp_path, "cosmos2-t2i") as client:
        names = {item["model_name"] for item in client.get("/sdapi/v1/sd-models").json()}
        assert "cosmos2-t2i" in names
        response = client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "cfg_scale": 3, "sampler_name": "diffusers",
            "override_settings": {"randn_source": "CPU"}, **SMALL})
        assert response.status_code == 200, response.text
        assert "Model: cosmos2-t2i" in info(response)["infotexts"][0]
        ours = pixels(response.json()["images"][0]) / np.float32(255)
        with torch.no_grad():
            expected = reference(PROMPT, height=32, width=48, num_inference_steps=3,
                                 guidance_scale=3.0, generator=torch.Generator().manual_seed(7),
                                 output_type="np").images[0]
        assert np.abs(ours - expected).max() <= 1 / 255 + 1e-5  # diffusers' truncated
        response = client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "sampler_name": "Euler", **SMALL})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "Cosmos Predict2" in detail and "\n" not in detail, detail
