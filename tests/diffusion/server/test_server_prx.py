"""PRX through the server like any model: listed by /sdapi/v1/sd-models, txt2img with Euler
and the CPU noise source giving diffusers' PRXPipeline picture over the same sigmas (CFG 4 with
a negative prompt), the negative prompt visibly mattering, and a refiner refused in one line
(422) before anything runs."""

from __future__ import annotations

import types
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

SMALL = {"width": 40, "height": 24, "steps": 2, "seed": 5}  # 6 x 10 patches
PROMPT = "a red circle on a blue square"
NEGATIVE = "an astronaut riding a horse at night"
TOL = 0.01  # mean |ours - diffusers| in [0, 1]: the PNG's rounding


def _diffusers(reference: Any, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    """PRXPipeline's picture over the Simple schedule's sigmas (1 .. 1/n shifted): given as
    timesteps to an unshifted copy of its scheduler (given timesteps reach the transformer as
    they are, while a shifting scheduler would shift only the sigmas); ftfy, which it calls and
    this venv lacks, as the identity (the prompts are plain text)."""
    import diffusers
    import diffusers.pipelines.prx.pipeline_prx as module

    monkeypatch.setattr(module, "ftfy", types.SimpleNamespace(fix_text=lambda t: t),
                        raising=False)
    shift, steps = reference.scheduler.config.shift, SMALL["steps"]
    monkeypatch.setattr(reference, "scheduler", diffusers.FlowMatchEulerDiscreteScheduler
                        .from_config(reference.scheduler.config, shift=1.0))
    unshifted = np.linspace(1.0, 1 / steps, steps)
    sigmas = shift * unshifted / (1 + (shift - 1) * unshifted)
    with torch.no_grad():
        images = reference(PROMPT, negative_prompt=NEGATIVE, guidance_scale=4.0,
                           height=SMALL["height"], width=SMALL["width"],
                           timesteps=list(sigmas * 1000),
                           generator=torch.Generator().manual_seed(SMALL["seed"]),
                           use_resolution_binning=False, output_type="np").images
    return np.asarray(images[0])


def test_prx_through_the_api(tiny_prx: tuple[Path, Any],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    folder, reference = tiny_prx

    def txt2img(negative: str, **more: Any) -> Any:
        return client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "negative_prompt": negative, "cfg_scale": 4.0,
            "sampler_name": "Euler", "override_settings": {"randn_source": "CPU"}, **SMALL,
            **more})

    with serving(folder.parent, folder.name) as client:
        names = {item["model_name"] for item in client.get("/sdapi/v1/sd-models").json()}
        assert folder.name in names
        response = txt2img(NEGATIVE)
        assert response.status_code == 200, response.text
        text = info(response)["infotexts"][0]
        assert "Sampler: Euler, Schedule type: Simple, CFG scale: 4, Seed: 5" in text
        assert f"Model: {folder.name}" in text
        ours = pixels(response.json()["images"][0]) / np.float32(255)
        assert np.abs(ours - _diffusers(reference, monkeypatch)).mean() < TOL
        # the negative prompt visibly matters: the tolerance tells pictures apart
        other = pixels(txt2img("a blurry photo").json()["images"][0]) / np.float32(255)
        assert np.abs(ours - other).mean() > 2 * TOL
        response = txt2img(NEGATIVE, refiner_checkpoint=folder.name, refiner_switch_at=0.5)
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "refiner" in detail and "PRX" in detail and "\n" not in detail, detail
