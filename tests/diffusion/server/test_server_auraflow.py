"""AuraFlow through the server like any model: listed by /sdapi/v1/sd-models, txt2img with the
"diffusers" sampler and the CPU noise source giving diffusers' AuraFlowPipeline picture (CFG
3.5 with a negative prompt), a WebUI sampler (Euler over the Simple schedule, not AuraFlow's
own) running, and a refiner refused in one line (422) before anything runs."""

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

SMALL = {"width": 32, "height": 24, "steps": 2, "seed": 5}  # 6 x 8 patches
PROMPT = "a red circle on a blue square"
NEGATIVE = "an astronaut riding a horse at night"
TOL = 0.01  # mean |ours - diffusers| in [0, 1]: the PNG's rounding


def _diffusers(reference: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(PROMPT, negative_prompt=NEGATIVE, guidance_scale=3.5,
                           height=SMALL["height"], width=SMALL["width"],
                           num_inference_steps=SMALL["steps"],
                           generator=torch.Generator().manual_seed(SMALL["seed"]),
                           output_type="np").images
    return np.asarray(images[0])


def test_auraflow_through_the_api(tiny_auraflow: tuple[Path, Any]) -> None:
    folder, reference = tiny_auraflow

    def txt2img(sampler: str, **more: Any) -> Any:
        return client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "negative_prompt": NEGATIVE, "cfg_scale": 3.5,
            "sampler_name": sampler, "override_settings": {"randn_source": "CPU"}, **SMALL,
            **more})

    with serving(folder.parent, folder.name) as client:
        names = {item["model_name"] for item in client.get("/sdapi/v1/sd-models").json()}
        assert folder.name in names
        response = txt2img("diffusers")
        assert response.status_code == 200, response.text
        assert f"Model: {folder.name}" in info(response)["infotexts"][0]
        ours = pixels(response.json()["images"][0]) / np.float32(255)
        assert np.abs(ours - _diffusers(reference)).mean() < TOL
        response = txt2img("Euler")
        assert response.status_code == 200, response.text
        text = info(response)["infotexts"][0]
        assert "Sampler: Euler, Schedule type: Simple, CFG scale: 3.5, Seed: 5" in text
        response = txt2img("Euler", refiner_checkpoint=folder.name, refiner_switch_at=0.5)
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "refiner" in detail and "AuraFlow" in detail and "\n" not in detail, detail
