"""Ideogram 4 through the server like any model: listed by /sdapi/v1/sd-models, txt2img with
the "diffusers" sampler and the CPU noise source giving diffusers' Ideogram4Pipeline picture
(a constant guidance scale), and a negative prompt refused in one line (422) before anything
runs."""

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
TOL = 0.003  # mean |ours - diffusers| in [0, 1]: the PNG's rounding (<= 1/510)


def test_ideogram4_through_the_api(tiny_ideogram4: tuple[Path, Any]) -> None:
    folder, reference = tiny_ideogram4

    def txt2img(**more: Any) -> Any:
        return client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "cfg_scale": 3, "sampler_name": "diffusers",
            "override_settings": {"randn_source": "CPU"}, **SMALL, **more})

    with torch.no_grad():
        expected = reference(PROMPT, height=SMALL["height"], width=SMALL["width"],
                             num_inference_steps=SMALL["steps"], guidance_scale=3.0,
                             guidance_schedule=None, max_sequence_length=48,
                             generator=torch.Generator().manual_seed(SMALL["seed"]),
                             output_type="np").images[0]
    with serving(folder.parent, folder.name) as client:
        names = {item["model_name"] for item in client.get("/sdapi/v1/sd-models").json()}
        assert folder.name in names
        response = txt2img()
        assert response.status_code == 200, response.text
        assert f"Model: {folder.name}" in info(response)["infotexts"][0]
        ours = pixels(response.json()["images"][0]) / np.float32(255)
        assert np.abs(ours - expected).mean() < TOL
        response = txt2img(negative_prompt="blurry")
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "negative prompt" in detail and "\n" not in detail, detail
