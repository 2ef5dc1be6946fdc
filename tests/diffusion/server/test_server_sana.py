"""Sana through the server: listed by /sdapi/v1/sd-models; txt2img with Euler over the
Simple schedule and the CPU noise source is diffusers' SanaPipeline with a
FlowMatchEulerDiscreteScheduler of the folder's flow_shift over sigmas 1 .. 1/n (FLUX's
schedule; CFG with a negative prompt), its infotext naming the model; a refiner and a sampler
Sana lacks refused in one line (422) before anything runs. Sana Sprint, which runs only its own
sampler: a request naming none runs it (diffusers' SanaSprintPipeline), one naming another is
refused naming it, /sdapi/v1/samplers lists only it."""

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

SMALL = {"width": 64, "height": 32, "seed": 5}
PROMPT = "a red circle on a blue square"
NEGATIVE = "an astronaut riding a horse at night"
TOL = 0.01  # mean |ours - diffusers| in [0, 1]: the PNG's rounding
SPRINT_TOL = 0.002  # the same for Sprint's two steps without CFG: 9.3e-4 measured


def test_sana_through_the_api(tiny_sana: tuple[Path, Any]) -> None:
    import diffusers

    folder, reference = tiny_sana
    euler = diffusers.SanaPipeline(**{**reference.components, "scheduler": (
        diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0))})
    with serving(folder.parent, folder.name) as client:
        names = {item["model_name"] for item in client.get("/sdapi/v1/sd-models").json()}
        assert folder.name in names
        response = client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "negative_prompt": NEGATIVE, "cfg_scale": 4.5, "steps": 2,
            "sampler_name": "Euler", "override_settings": {"randn_source": "CPU"}, **SMALL})
        assert response.status_code == 200, response.text
        text = info(response)["infotexts"][0]
        assert "Sampler: Euler, Schedule type: Simple, CFG scale: 4.5" in text
        assert f"Model: {folder.name}" in text
        ours = pixels(response.json()["images"][0]) / np.float32(255)
        with torch.no_grad():
            expected = euler(PROMPT, negative_prompt=NEGATIVE, guidance_scale=4.5,
                             sigmas=[1.0, 0.5], height=SMALL["height"],
                             width=SMALL["width"], use_resolution_binning=False,
                             generator=torch.Generator().manual_seed(SMALL["seed"]),
                             output_type="np").images[0]
        assert np.abs(ours - expected).mean() < TOL
        response = client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "refiner_checkpoint": folder.name, "refiner_switch_at": 0.5,
            "steps": 2, **SMALL})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "refiner" in detail and "Sana" in detail and "\n" not in detail, detail
        response = client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "sampler_name": "DPM2", "steps": 2, **SMALL})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "DPM2" in detail and "one of Euler" in detail and "'diffusers'" in detail, detail
        listed = [item["name"] for item in client.get("/sdapi/v1/samplers").json()]
        assert "Euler" in listed and "DPM2" not in listed and listed[-1] == "diffusers"


def test_sana_sprint_runs_its_own_sampler(tiny_sana_sprint: tuple[Path, Any]) -> None:
    """No sampler_name: Sprint's own SCM steps (diffusers' picture, its embedded guidance
    from distilled_cfg_scale, which visibly matters); "Euler" named: a 422 naming the sampler
    it runs."""
    folder, reference = tiny_sana_sprint
    body = {"prompt": PROMPT, "steps": 2, "distilled_cfg_scale": 4.5,
            "override_settings": {"randn_source": "CPU"}, **SMALL}
    with serving(folder.parent, folder.name) as client:
        assert [item["name"] for item in client.get("/sdapi/v1/samplers").json()] == [
            "diffusers"]
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 200, response.text
        assert "Sampler: diffusers" in info(response)["infotexts"][0]
        ours = pixels(response.json()["images"][0]) / np.float32(255)
        with torch.no_grad():
            expected = reference(PROMPT, num_inference_steps=2, guidance_scale=4.5,
                                 height=SMALL["height"], width=SMALL["width"],
                                 use_resolution_binning=False, output_type="np",
                                 generator=torch.Generator().manual_seed(SMALL["seed"])
                                 ).images[0]
        assert np.abs(ours - expected).mean() < SPRINT_TOL
        response = client.post("/sdapi/v1/txt2img", json={**body, "sampler_name": "",
                                                          "distilled_cfg_scale": 1.0})
        assert response.status_code == 200, response.text
        other = pixels(response.json()["images"][0]) / np.float32(255)
        assert np.abs(other - expected).mean() > 10 * SPRINT_TOL  # the guidance matters
        response = client.post("/sdapi/v1/txt2img", json={**body, "sampler_name": "Euler"})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "Euler" in detail and "'diffusers'" in detail and "\n" not in detail, detail
