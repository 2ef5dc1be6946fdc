"""Lumina Image 2.0 through the server like any model: listed by /sdapi/v1/sd-models,
txt2img with Euler and the CPU noise source giving diffusers' Lumina2Pipeline picture (CFG
with a negative prompt, truncated to the first quarter of the steps and normalised, as the
family runs it), the negative prompt visibly mattering, and a refiner refused in one line
(422) before anything runs."""

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

SMALL = {"width": 48, "height": 32, "steps": 4, "seed": 5}  # 2 x 3 patches
PROMPT = "a red circle on a blue background"
NEGATIVE = "a photo of a cat"
TOL = 0.01  # mean |ours - diffusers| in [0, 1]: the PNG's rounding


def _diffusers(reference: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(PROMPT, negative_prompt=NEGATIVE, guidance_scale=3.0,
                           cfg_trunc_ratio=0.25, cfg_normalization=True,
                           max_sequence_length=64,  # the padding is never read
                           height=SMALL["height"], width=SMALL["width"],
                           num_inference_steps=SMALL["steps"],
                           generator=torch.Generator().manual_seed(SMALL["seed"]),
                           output_type="np").images
    return np.asarray(images[0])


def test_lumina2_through_the_api(tiny_lumina2: tuple[Path, Any]) -> None:
    folder, reference = tiny_lumina2
    with serving(folder.parent, folder.name) as client:
        names = {item["model_name"] for item in client.get("/sdapi/v1/sd-models").json()}
        assert folder.name in names
        # Euler over the Simple schedule is diffusers' schedule and step, and the first step
        # of 4 is guided as Lumina2Pipeline's cfg_trunc_ratio 0.25 guides it; with the CPU
        # noise source, diffusers' picture
        response = client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "negative_prompt": NEGATIVE, "cfg_scale": 3,
            "sampler_name": "Euler", "override_settings": {"randn_source": "CPU"}, **SMALL})
        assert response.status_code == 200, response.text
        text = info(response)["infotexts"][0]
        assert "Sampler: Euler, Schedule type: Simple, CFG scale: 3, Seed: 5" in text
        assert f"Model: {folder.name}" in text
        ours = pixels(response.json()["images"][0]) / np.float32(255)
        assert np.abs(ours - _diffusers(reference)).mean() < TOL
        # the negative prompt visibly matters: the tolerance tells pictures apart
        response = client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "negative_prompt": "a horse at night", "cfg_scale": 3,
            "sampler_name": "Euler", "override_settings": {"randn_source": "CPU"}, **SMALL})
        other = pixels(response.json()["images"][0]) / np.float32(255)
        assert np.abs(ours - other).mean() > 2 * TOL
        response = client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "refiner_checkpoint": folder.name, "refiner_switch_at": 0.5,
            **SMALL})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "refiner" in detail and "Lumina 2" in detail and "\n" not in detail, detail
