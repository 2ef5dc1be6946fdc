"""Bria 3.2 through the server like any model: listed by /sdapi/v1/sd-models, txt2img with
its own sampler ("diffusers": the training sigmas under the folder's constant shift) and the
CPU noise source giving diffusers' BriaPipeline picture (CFG 5 with a negative prompt, which
visibly matters), Euler over the Simple schedule running, and a refiner refused in one line
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

SMALL = {"width": 40, "height": 24, "steps": 2, "seed": 5}  # 3 x 5 patches
PROMPT = "a red circle on a blue square"
NEGATIVE = "an astronaut riding a horse"
TOL = 0.01  # mean |ours - diffusers| in [0, 1]: the PNG's rounding


def _diffusers(reference: Any, negative: str) -> np.ndarray:
    with torch.no_grad():
        images = reference(PROMPT, negative_prompt=negative, guidance_scale=5.0,
                           height=SMALL["height"], width=SMALL["width"],
                           num_inference_steps=SMALL["steps"],
                           generator=torch.Generator().manual_seed(SMALL["seed"]),
                           output_type="np").images
    return np.asarray(images[0])


def test_bria_through_the_api(tiny_bria: tuple[Path, Any]) -> None:
    folder, reference = tiny_bria

    def txt2img(**more: Any) -> Any:
        return client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "negative_prompt": NEGATIVE, "cfg_scale": 5,
            "sampler_name": "diffusers", "override_settings": {"randn_source": "CPU"},
            **SMALL, **more})

    with serving(folder.parent, folder.name) as client:
        names = {item["model_name"] for item in client.get("/sdapi/v1/sd-models").json()}
        assert folder.name in names
        response = txt2img()
        assert response.status_code == 200, response.text
        text = info(response)["infotexts"][0]
        assert "Sampler: diffusers, CFG scale: 5, Seed: 5" in text
        assert f"Model: {folder.name}" in text
        ours = pixels(response.json()["images"][0]) / np.float32(255)
        expected = _diffusers(reference, NEGATIVE)
        assert np.abs(ours - expected).mean() < TOL
        # the negative prompt visibly matters: the tolerance tells pictures apart
        assert np.abs(_diffusers(reference, "") - expected).mean() > 2 * TOL
        response = txt2img(sampler_name="Euler")
        assert response.status_code == 200, response.text
        assert "Sampler: Euler, Schedule type: Simple" in info(response)["infotexts"][0]
        response = txt2img(refiner_checkpoint=folder.name, refiner_switch_at=0.5)
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "refiner" in detail and "Bria" in detail and "\n" not in detail, detail
