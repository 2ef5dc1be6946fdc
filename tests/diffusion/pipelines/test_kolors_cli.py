"""Kolors through the command line and the server like any model: the family and its
defaults (50 steps at CFG 5) told from the folder, KolorsPipeline's picture with `--sampler
diffusers --rng torch`, /sdapi/v1/txt2img with Euler on Karras sigmas and the CPU noise
source giving diffusers' Euler on those sigmas (kolors_tiny.karras_euler), and what Kolors
does not take refused in one line, as is a folder without its tokenizer.model."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_pixels
from kolors_tiny import karras_euler, kolors_folder

import gpucore
from diffusion.pipelines.contract import SamplingDefaults
from diffusion.pipelines.families import capabilities_of
from diffusion.pipelines.load import model_defaults

SIZE = 32
PROMPT, NEGATIVE = "a lighthouse at dusk, oil painting", "一只猫"
TOL = 0.01  # mean |ours - diffusers| in [0, 1] through a PNG (its rounding)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return kolors_folder(tmp_path_factory)


def test_kolors_from_the_cli(first_device: gpucore.Device, tiny: Any, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    capabilities = capabilities_of(tiny.path)
    assert capabilities is not None and capabilities.family == "kolors"
    assert not capabilities.control and not capabilities.refiner
    assert model_defaults(tiny.path)[0] == SamplingDefaults(steps=50, cfg_scale=5.0)
    out, err = cli_ok(capsys, "txt2img", "--model", str(tiny.path), "--prompt", PROMPT,
                      "--negative-prompt", NEGATIVE, "--width", str(SIZE), "--height",
                      str(SIZE), "--steps", "2", "--sampler", "diffusers", "--rng", "torch",
                      "--seed", "7", "--dtype", "float32", "--out", str(tmp_path / "kolors.png"))
    assert "--cfg-scale 5" in err
    expected = tiny.pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=2,
                         guidance_scale=5.0, width=SIZE, height=SIZE,
                         generator=torch.Generator().manual_seed(7), output_type="np").images
    assert np.abs(png_pixels(out) - expected[0]).mean() < TOL
    line = cli_error(capsys, "txt2img", "--model", str(tiny.path), "--prompt", PROMPT,
                     "--text-encoder", str(tmp_path / "kolors.png"), "--steps", "1")
    assert "Kolors" in line, line
    broken = shutil.copytree(tiny.path, tmp_path / "Kolors-broken")
    (broken / "tokenizer" / "tokenizer.model").unlink()
    line = cli_error(capsys, "txt2img", "--model", str(broken), "--prompt", PROMPT,
                     "--steps", "1")
    assert "tokenizer.model" in line, line


def test_kolors_through_the_api(tiny: Any) -> None:
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    if not gpucore.devices():
        pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)")
    from server_support import info, pixels, serving

    request = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "cfg_scale": 5.0, "steps": 2,
               "seed": 6, "width": SIZE, "height": SIZE, "sampler_name": "Euler",
               "scheduler": "Karras", "override_settings": {"randn_source": "CPU"}}
    with serving(tiny.path.parent, tiny.path.name) as client:
        names = {item["model_name"] for item in client.get("/sdapi/v1/sd-models").json()}
        assert tiny.path.name in names
        response = client.post("/sdapi/v1/txt2img", json=request)
        assert response.status_code == 200, response.text
        assert "Sampler: Euler, Schedule type: Karras, CFG scale: 5" in info(
            response)["infotexts"][0]
        ours = pixels(response.json()["images"][0]) / np.float32(255)
        expected = karras_euler(tiny.pipe, PROMPT, negative_prompt=NEGATIVE, steps=2, seed=6,
                                size=SIZE, guidance_scale=5.0)
        assert np.abs(ours - expected[0]).mean() < TOL
        response = client.post("/sdapi/v1/txt2img", json={
            **request, "refiner_checkpoint": tiny.path.name, "refiner_switch_at": 0.5})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "refiner" in detail and "Kolors" in detail and "\n" not in detail, detail
