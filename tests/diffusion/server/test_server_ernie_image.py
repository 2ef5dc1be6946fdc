"""ERNIE-Image through the server like any model: listed by /sdapi/v1/sd-models, txt2img
with Euler and the CPU noise source giving diffusers' ErnieImagePipeline picture (CFG 4 with
a negative prompt, the prompt enhancer off), img2img answering, and a refiner refused in one
line (422) before anything runs."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
import torch
from server_support import info, pixels, serving

import gpucore

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

SMALL = {"width": 40, "height": 24, "steps": 2, "seed": 5}
PROMPT = "a red circle on a blue square"
NEGATIVE = "an astronaut riding a horse at night"
TOL = 0.01  # mean |ours - diffusers| in [0, 1]: the PNG's rounding


def _diffusers(reference: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(PROMPT, negative_prompt=NEGATIVE, guidance_scale=4.0, use_pe=False,
                           height=SMALL["height"], width=SMALL["width"],
                           num_inference_steps=SMALL["steps"],
                           generator=torch.Generator().manual_seed(SMALL["seed"]),
                           output_type="np").images
    return np.asarray(images[0])


def test_ernie_image_through_the_api(tiny_ernie: tuple[Path, Any]) -> None:
    from PIL import Image

    folder, reference = tiny_ernie
    common = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "cfg_scale": 4.0,
              "sampler_name": "Euler", "override_settings": {"randn_source": "CPU"}, **SMALL}
    with serving(folder.parent, folder.name) as client:
        names = {item["model_name"] for item in client.get("/sdapi/v1/sd-models").json()}
        assert folder.name in names
        response = client.post("/sdapi/v1/txt2img", json=common)
        assert response.status_code == 200, response.text
        text = info(response)["infotexts"][0]
        assert "Sampler: Euler, Schedule type: Simple, CFG scale: 4, Seed: 5" in text
        ours = pixels(response.json()["images"][0]) / np.float32(255)
        assert np.abs(ours - _diffusers(reference)).mean() < TOL
        buffer = io.BytesIO()
        Image.fromarray((ours * 255).astype(np.uint8)).save(buffer, format="PNG")
        response = client.post("/sdapi/v1/img2img", json={
            **common, "init_images": [base64.b64encode(buffer.getvalue()).decode()],
            "denoising_strength": 0.5})
        assert response.status_code == 200, response.text
        assert pixels(response.json()["images"][0]).shape == (24, 40, 3)
        response = client.post("/sdapi/v1/txt2img", json={
            **common, "refiner_checkpoint": folder.name, "refiner_switch_at": 0.5})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "refiner" in detail and "ERNIE" in detail and "\n" not in detail, detail
