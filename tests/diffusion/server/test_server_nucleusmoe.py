"""NucleusMoE-Image through the server like any model: listed by /sdapi/v1/sd-models, txt2img
with Euler and the CPU noise source giving diffusers' NucleusMoEImagePipeline picture (CFG 4
with a negative prompt), the negative prompt visibly mattering, and a refiner refused in one
line (422) before anything runs."""

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

SMALL = {"width": 40, "height": 24, "steps": 2, "seed": 5}
PROMPT = "a red circle on a blue square"
NEGATIVE = "an astronaut riding a horse at night"
TOL = 0.003  # mean |ours - diffusers| in [0, 1]: the PNG's rounding (<= 1/510)


def _diffusers(reference: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(PROMPT, negative_prompt=NEGATIVE, guidance_scale=4.0,
                           height=SMALL["height"], width=SMALL["width"],
                           num_inference_steps=SMALL["steps"],
                           generator=torch.Generator().manual_seed(SMALL["seed"]),
                           output_type="np").images
    return np.asarray(images[0])


def test_nucleusmoe_through_the_api(tiny_nucleus: tuple[Path, Any]) -> None:
    folder, reference = tiny_nucleus

    def txt2img(negative: str, **more: Any) -> Any:
        return client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "negative_prompt": negative, "cfg_scale": 4,
            "sampler_name": "Euler", "override_settings": {"randn_source": "CPU"}, **SMALL,
            **more})

    with serving(folder.parent, folder.name) as client:
        names = {item["model_name"] for item in client.get("/sdapi/v1/sd-models").json()}
        assert folder.name in names
        # Euler over the Simple schedule is diffusers' schedule and step; with the CPU noise
        # source, NucleusMoEImagePipeline's picture
        response = txt2img(NEGATIVE)
        assert response.status_code == 200, response.text
        text = info(response)["infotexts"][0]
        assert "Sampler: Euler, Schedule type: Simple, CFG scale: 4" in text
        assert f"Model: {folder.name}" in text
        ours = pixels(response.json()["images"][0]) / np.float32(255)
        assert np.abs(ours - _diffusers(reference)).mean() < TOL  # measured 9.6e-4
        # the negative prompt visibly matters: the tolerance tells pictures apart
        other = pixels(txt2img("a blurry photo").json()["images"][0]) / np.float32(255)
        assert np.abs(ours - other).mean() > 2 * TOL  # measured 1.3e-2
        response = txt2img(NEGATIVE, refiner_checkpoint=folder.name, refiner_switch_at=0.5)
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "refiner" in detail and "NucleusMoE" in detail and "\n" not in detail, detail
