"""HunyuanImage 2.1 through the server like any model: listed by /sdapi/v1/sd-models,
txt2img with Euler and an infotext naming the model, diffusers' picture with the CPU noise
source (a quoted text: the OCR guider, APG from its second step), and another WebUI sampler
refused in one line (422) before anything runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
from hunyuanimage_parts_tiny import GUIDER_TINY, diffusers_picture, tiny_hunyuanimage_pipeline
from server_support import info, pixels, serving

import gpucore

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

SMALL = {"width": 24, "height": 32, "steps": 2, "seed": 7}  # 2 steps: diffusers' sigmas
PROMPT = 'a shop sign that says "OPEN" in red'
TOL = 0.003  # mean |ours - diffusers| in [0, 1]: the PNG's rounding (the CLI's: 9e-4)


def test_hunyuanimage_through_the_api(tmp_path: Path) -> None:
    reference = tiny_hunyuanimage_pipeline(tmp_path)
    with serving(tmp_path, "hunyuanimage") as client:
        names = {item["model_name"] for item in client.get("/sdapi/v1/sd-models").json()}
        assert "hunyuanimage" in names
        # the plain guider's CFG scale: each guider as the folder has it (the OCR one here)
        response = client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "cfg_scale": GUIDER_TINY["guidance_scale"],
            "sampler_name": "Euler", "override_settings": {"randn_source": "CPU"},
            **SMALL})
        assert response.status_code == 200, response.text
        text = info(response)["infotexts"][0]
        assert "Sampler: Euler, Schedule type: Simple" in text, text
        assert "Model: hunyuanimage" in text, text
        ours = pixels(response.json()["images"][0]) / np.float32(255)
        expected = diffusers_picture(reference, PROMPT, height=SMALL["height"],
                                     width=SMALL["width"], num_inference_steps=SMALL["steps"])
        assert np.abs(ours - expected[0]).mean() < TOL
        response = client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "sampler_name": "Heun", **SMALL})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "choose one of Euler" in detail and "\n" not in detail, detail
