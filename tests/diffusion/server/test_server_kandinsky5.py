"""Kandinsky 5 (Image Lite) through the server like any model: listed by /sdapi/v1/sd-models,
txt2img with a WebUI sampler and an infotext naming the model, diffusers' picture with Euler
and the CPU noise source (CFG with a negative prompt) from the same noise, the prompt visibly
mattering, and a refiner refused in one line (422) before anything runs."""

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

SMALL = {"width": 40, "height": 24, "steps": 2, "seed": 5}  # 6 x 10 patches (tiny VAE: 2x)
PROMPT = "a red circle on a blue square"
NEGATIVE = "an astronaut riding a horse at night"
TOL = 0.01  # mean |ours - diffusers| in [0, 1]: the PNG's rounding


@pytest.fixture(scope="module")
def served(tiny_kandinsky5: tuple[Path, Any]) -> Any:
    """(the server's client on flow_fixtures' tiny folder "kandinsky5", diffusers'
    Kandinsky5T2IPipeline of it, sized for SMALL)."""
    folder, reference = tiny_kandinsky5
    with serving(folder.parent, folder.name) as client:
        yield client, reference


def _simple_sigmas(steps: int) -> list[float]:
    """The WebUI's Simple schedule before its shift: 1 - k/steps, k < steps.
    Kandinsky5T2IPipeline sets its scheduler's timesteps from the count alone (sigmas linear
    from 1 down to the shifted sigma_min, shifted again: [1, 0.0089] at 2 steps), which no
    WebUI schedule type gives; FlowMatchEulerDiscreteScheduler takes Simple's as `sigmas` and
    shifts them as the model's sigma table does ([1, 0.75] at 2 steps, shift 3)."""
    return list(np.linspace(1.0, 1.0 / steps, steps))


def _diffusers(reference: Any, prompt: str) -> np.ndarray:
    """Kandinsky5T2IPipeline's picture over the Simple schedule from the WebUI's CPU noise:
    drawn channels first, (1, C, h, w), as the WebUI's samplers draw it, handed over channels
    last (1, 1, h, w, C), the pipeline's layout (its own draw takes that shape, so the same
    seed gives other noise: the WebUI's samplers cannot give its seeded picture)."""
    shape = (1, 4, SMALL["height"] // 2, SMALL["width"] // 2)  # the tiny VAE: 4 channels, 2x
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(SMALL["seed"]))
    scheduler = reference.scheduler
    scheduler.set_timesteps = lambda steps, device=None: type(scheduler).set_timesteps(
        scheduler, sigmas=_simple_sigmas(steps), device=device)
    try:
        with torch.no_grad():
            images = reference(prompt, negative_prompt=NEGATIVE, guidance_scale=2.5,
                               height=SMALL["height"], width=SMALL["width"],
                               num_inference_steps=SMALL["steps"],
                               latents=noise.permute(0, 2, 3, 1)[:, None],
                               output_type="np").image
    finally:  # the shared reference as it was
        del scheduler.set_timesteps
    return np.asarray(images[0])


def test_kandinsky5_through_the_api(served: tuple[Any, Any]) -> None:
    client, reference = served
    names = {item["model_name"] for item in client.get("/sdapi/v1/sd-models").json()}
    assert "kandinsky5" in names
    # Euler over the Simple schedule (the config's shift 3) is diffusers' scheduler's step
    # over its sigmas (_simple_sigmas); CFG 2.5 is its guidance_scale 2.5; from the same
    # noise, its picture
    response = client.post("/sdapi/v1/txt2img", json={
        "prompt": PROMPT, "negative_prompt": NEGATIVE, "cfg_scale": 2.5,
        "sampler_name": "Euler", "override_settings": {"randn_source": "CPU"}, **SMALL})
    assert response.status_code == 200, response.text
    text = info(response)["infotexts"][0]
    assert "Sampler: Euler, Schedule type: Simple, CFG scale: 2.5, Seed: 5" in text
    assert "Model: kandinsky5" in text
    ours = pixels(response.json()["images"][0]) / np.float32(255)
    assert np.abs(ours - _diffusers(reference, PROMPT)).mean() < TOL
    # the prompt visibly matters: the tolerance tells pictures apart
    assert np.abs(ours - _diffusers(reference, "a horse at night")).mean() > 2 * TOL
    # what the family does not take: a 422 in one line, before anything runs
    response = client.post("/sdapi/v1/txt2img", json={
        "prompt": PROMPT, "refiner_checkpoint": "kandinsky5", "refiner_switch_at": 0.5,
        **SMALL})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "refiner" in detail and "Kandinsky 5" in detail and "\n" not in detail, detail
