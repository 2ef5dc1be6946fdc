"""Krea 2 through the server like any model: listed by /sdapi/v1/sd-models, txt2img with a
WebUI sampler and an infotext naming the model, diffusers' picture with Euler and the CPU
noise source (CFG with a negative prompt), the prompt visibly mattering, and a refiner
refused in one line (422) before anything runs."""

from __future__ import annotations

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

SMALL = {"width": 40, "height": 24, "steps": 2, "seed": 5}  # 3 x 5 patches
PROMPT = "a red circle on a blue square"
NEGATIVE = "an astronaut riding a horse at night"
TOL = 0.01  # mean |ours - diffusers| in [0, 1]: the PNG's rounding


def _diffusers(reference: Any, prompt: str) -> np.ndarray:
    with torch.no_grad():
        images = reference(prompt, negative_prompt=NEGATIVE, guidance_scale=2.0,
                           height=SMALL["height"], width=SMALL["width"],
                           num_inference_steps=SMALL["steps"],
                           generator=torch.Generator().manual_seed(SMALL["seed"]),
                           output_type="np").images
    return np.asarray(images[0])


def test_krea2_through_the_api(tiny_krea2: tuple[Path, Any]) -> None:
    folder, reference = tiny_krea2
    with serving(folder.parent, folder.name) as client:
        names = {item["model_name"] for item in client.get("/sdapi/v1/sd-models").json()}
        assert folder.name in names
        # Euler over the Simple schedule at 2 steps is diffusers' schedule and step; CFG 3
        # is Krea 2's guidance_scale 2; with the CPU noise source, Krea2Pipeline's picture
        response = client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "negative_prompt": NEGATIVE, "cfg_scale": 3,
            "sampler_name": "Euler", "override_settings": {"randn_source": "CPU"}, **SMALL})
        assert response.status_code == 200, response.text
        text = info(response)["infotexts"][0]
        assert "Sampler: Euler, Schedule type: Simple, CFG scale: 3, Seed: 5" in text
        assert f"Model: {folder.name}" in text
        ours = pixels(response.json()["images"][0]) / np.float32(255)
        assert np.abs(ours - _diffusers(reference, PROMPT)).mean() < TOL
        # the prompt visibly matters: the tolerance tells pictures apart
        assert np.abs(ours - _diffusers(reference, "a horse at night")).mean() > 2 * TOL
        # what the family does not take: a 422 in one line, before anything runs
        response = client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "refiner_checkpoint": folder.name, "refiner_switch_at": 0.5,
            **SMALL})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "refiner" in detail and "Krea 2" in detail and "\n" not in detail, detail
