"""HiDream-I1 through the server like any model: listed by /sdapi/v1/sd-models, txt2img with
its own sampler ("diffusers": the folder's UniPC on flow sigmas) and the CPU noise source
giving diffusers' HiDreamImagePipeline picture (CFG 5 with a negative prompt, which visibly
matters), its infotext naming the model, and a refiner refused in one line (422) before
anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
import torch
from hidream_pipe_tiny import SIDE
from server_support import info, pixels, serving

import gpucore

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

SMALL = {"width": SIDE, "height": SIDE, "steps": 2, "seed": 5}
PROMPT = "a red circle on a blue background"
NEGATIVE = "a cat"
TOL = 0.003  # mean |ours - diffusers| in [0, 1]: the PNG's rounding (the CLI test's)


def _diffusers(reference: Any, negative: str) -> np.ndarray:
    with torch.no_grad():
        images = reference(PROMPT, negative_prompt=negative, guidance_scale=5.0,
                           height=SIDE, width=SIDE, num_inference_steps=SMALL["steps"],
                           generator=torch.Generator().manual_seed(SMALL["seed"]),
                           output_type="np").images
    return np.asarray(images[0])


def test_hidream_through_the_api(tiny_hidream: tuple[Path, Any]) -> None:
    folder, reference = tiny_hidream
    body = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "cfg_scale": 5,
            "sampler_name": "diffusers", "override_settings": {"randn_source": "CPU"},
            **SMALL}
    with serving(folder.parent, folder.name) as client:
        names = {item["model_name"] for item in client.get("/sdapi/v1/sd-models").json()}
        assert "hidream" in names
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 200, response.text
        text = info(response)["infotexts"][0]
        assert "Sampler: diffusers, CFG scale: 5, Seed: 5" in text and "Model: hidream" in text
        ours = pixels(response.json()["images"][0]) / np.float32(255)
        expected = _diffusers(reference, NEGATIVE)
        assert np.abs(ours - expected).mean() < TOL
        # the negative prompt visibly matters: the tolerance tells pictures apart
        assert np.abs(_diffusers(reference, "a horse at night") - expected).mean() > 3 * TOL
        response = client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "refiner_checkpoint": "hidream", "refiner_switch_at": 0.5,
            **SMALL})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "refiner" in detail and "HiDream" in detail and "\n" not in detail, detail
