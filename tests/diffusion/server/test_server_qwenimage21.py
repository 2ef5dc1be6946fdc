"""Qwen-Image 2.1 through the server like any model: listed by /sdapi/v1/sd-models, txt2img
with a WebUI sampler and an infotext naming the model, diffusers' picture with Euler and the
CPU noise source (true CFG with a negative prompt), and a refiner refused in one line (422).
img2img is its editing, as the CLI's (test_qwenimage21_edit.py): `init_images` are the
condition pictures in order (the first the init image, the others its references, as FLUX.2's),
the picture diffusers' QwenImage21Pipeline(image=[init, reference]), the infotext counting
them, and a denoising strength refused in one line (422)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
import torch
from PIL import Image
from server_support import info, pixels, png_b64, serving

import gpucore
from diffusion.pipelines.flow import qwen_image21

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

# 4 x 2 latents (sides multiples of 32: the text encoder's slots hold 2 x 2 latents)
SMALL = {"width": 64, "height": 32, "steps": 2, "seed": 5}
PROMPT = "a red circle on a blue square, " * 3
TOL = 0.01  # mean |ours - diffusers| in [0, 1]: the PNG's rounding (measured 1e-3)
# condition pictures read at about 256 x 256 pixels, not 1024 x 1024 (diffusers'
# output_resolution), for the tests' time on a CPU adapter
SIDE = 256
EDIT_TOL = 0.003  # mean, the edit's: the PNG's rounding (measured 9.4e-4)


@pytest.fixture(scope="module")
def served(tiny_qwenimage21: tuple[Path, Any]) -> Any:
    """(a TestClient of the server on the session's tiny folder, the folder, diffusers'
    pipeline of it); the model loads, on the first request, reading condition pictures at
    SIDE x SIDE."""
    folder, reference = tiny_qwenimage21
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(qwen_image21, "CONDITION_AREA", SIDE * SIDE)
        with serving(folder.parent, folder.name) as client:
            yield client, folder, reference


def _diffusers(reference: Any, prompt: str) -> np.ndarray:
    with torch.no_grad():
        images = reference(prompt, negative_prompt="a photo of a cat", true_cfg_scale=3.0,
                           height=SMALL["height"], width=SMALL["width"],
                           num_inference_steps=SMALL["steps"],
                           generator=torch.Generator().manual_seed(SMALL["seed"]),
                           output_type="np").images
    return np.asarray(images[0])[..., :3]  # the VAE's alpha: our pictures are opaque


def test_qwenimage21_through_the_api(served: tuple[Any, Path, Any]) -> None:
    client, folder, reference = served
    names = {item["model_name"] for item in client.get("/sdapi/v1/sd-models").json()}
    assert folder.name in names
    # Euler over the Simple schedule at 2 steps is diffusers' schedule (1 .. 1/n, shifted
    # by the picture's size) and step; with the CPU noise source, QwenImage21Pipeline's
    # picture
    response = client.post("/sdapi/v1/txt2img", json={
        "prompt": PROMPT, "negative_prompt": "a photo of a cat", "cfg_scale": 3,
        "sampler_name": "Euler", "override_settings": {"randn_source": "CPU"}, **SMALL})
    assert response.status_code == 200, response.text
    text = info(response)["infotexts"][0]
    assert "Sampler: Euler, Schedule type: Simple, CFG scale: 3, Seed: 5" in text
    assert f"Model: {folder.name}" in text
    ours = pixels(response.json()["images"][0]) / np.float32(255)
    assert np.abs(ours - _diffusers(reference, PROMPT)).mean() < TOL
    # the prompt visibly matters: the tolerance tells pictures apart
    assert np.abs(ours - _diffusers(reference, "a horse at night")).mean() > 5 * TOL
    # what the family does not take: a 422 in one line, before anything runs
    response = client.post("/sdapi/v1/txt2img", json={
        "prompt": PROMPT, "refiner_checkpoint": folder.name, "refiner_switch_at": 0.5,
        **SMALL})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "refiner" in detail and "Qwen-Image 2.1" in detail and "\n" not in detail


def _pictures() -> list[Image.Image]:
    """The init image at the output's size and a square reference of another size."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (SMALL["height"], SMALL["width"], 3),
                                         dtype=np.uint8)),
            Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))]


def _edited(reference: Any, pictures: list[Image.Image]) -> np.ndarray:
    with torch.no_grad():
        images = reference(PROMPT, image=pictures, height=SMALL["height"],
                           width=SMALL["width"], num_inference_steps=SMALL["steps"],
                           generator=torch.Generator().manual_seed(SMALL["seed"]),
                           output_type="np", output_resolution=SIDE).images
    return np.asarray(images[0])[..., :3]


def test_img2img_is_the_edit(served: tuple[Any, Path, Any]) -> None:
    client, _, reference = served
    pictures = _pictures()
    body = {"prompt": PROMPT, "init_images": [png_b64(p) for p in pictures], "cfg_scale": 1,
            "sampler_name": "Euler", "override_settings": {"randn_source": "CPU"}, **SMALL}
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    assert "Reference images: 2" in info(response)["infotexts"][0]
    ours = pixels(response.json()["images"][0]) / np.float32(255)
    assert np.abs(ours - _edited(reference, pictures)).mean() < EDIT_TOL
    # the further reference visibly matters: the picture of the init image alone is far off
    # (measured 0.034 mean)
    assert np.abs(ours - _edited(reference, pictures[:1])).mean() > 5 * EDIT_TOL
    response = client.post("/sdapi/v1/img2img", json={**body, "denoising_strength": 0.5})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "denoising strength 0.5: not supported for Qwen-Image 2.1 models" in detail
    assert "\n" not in detail
