"""Bria FIBO 2 through the server like any model: listed by /sdapi/v1/sd-models, txt2img with
its own sampler ("diffusers") and the CPU noise source within a level of diffusers' picture
(CFG 3 against the trained null caption, a JSON caption as the prompt), a WebUI sampler
refused in one line (422) before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
import torch
from bria_fibo2_tiny import tiny_fibo2_pipeline
from server_support import info, pixels, serving

import gpucore

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

SMALL = {"width": 40, "height": 24, "steps": 2, "seed": 7}
PROMPT = json.dumps({"short_description": "a red circle on a blue square",
                     "style_medium": "photograph"})


def test_bria_fibo2_through_the_api(tmp_path: Path) -> None:
    reference = tiny_fibo2_pipeline(tmp_path)
    with serving(tmp_path, "fibo2") as client:
        names = {item["model_name"] for item in client.get("/sdapi/v1/sd-models").json()}
        assert "fibo2" in names
        response = client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "cfg_scale": 3, "sampler_name": "diffusers",
            "override_settings": {"randn_source": "CPU"}, **SMALL})
        assert response.status_code == 200, response.text
        assert "Model: fibo2" in info(response)["infotexts"][0]
        ours = pixels(response.json()["images"][0]) / np.float32(255)
        with torch.no_grad():
            expected = reference(PROMPT, height=24, width=40, num_inference_steps=2,
                                 guidance_scale=3.0, generator=torch.Generator().manual_seed(7),
                                 output_type="np").images[0]
        assert np.abs(ours - expected).max() <= 1 / 255 + 1e-4  # diffusers' truncated
        response = client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "sampler_name": "Euler", **SMALL})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "Bria FIBO 2" in detail and "\n" not in detail, detail
