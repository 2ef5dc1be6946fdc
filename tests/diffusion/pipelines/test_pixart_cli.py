"""PixArt-Σ through the command line and the server: the family found with diffusers'
defaults, txt2img with its own sampler is diffusers' PixArtSigmaPipeline's picture (binned to
the model's aspect-ratio bin and resized back where the sample size has a table), and what it
refuses in one line (DDIM CFG++, an init image with its own sampler, a side not whole
patches; a 422 on the server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_pixels

import gpucore
from diffusion.pipelines.contract import SamplingDefaults
from diffusion.pipelines.load import model_defaults

PROMPT = "a red circle on a blue square"
NEGATIVE = "an astronaut riding a horse"
TOL = 0.01  # mean |ours - diffusers| in [0, 1]: the PNG's rounding


def _diffusers(reference: Any, width: int, height: int, **settings: Any) -> np.ndarray:
    with torch.no_grad():
        return reference(PROMPT, negative_prompt=NEGATIVE, height=height, width=width,
                         generator=torch.Generator().manual_seed(7), output_type="np",
                         **settings).images[0]


def test_pixart_from_the_cli(first_device: gpucore.Device, tiny_pixart: tuple[Path, Any],
                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """diffusers' defaults (20 steps of its own sampler at CFG 4.5) and its picture; refused
    in one line: DDIM CFG++ (not wired), an init image with its own sampler, a side not a
    multiple of 8."""
    folder, reference = tiny_pixart
    assert model_defaults(folder)[0] == SamplingDefaults(steps=20, sampler="diffusers",
                                                         cfg_scale=4.5)
    common = ("txt2img", "--model", str(folder), "--prompt", PROMPT, "--width", "40",
              "--height", "24", "--steps", "3", "--seed", "7", "--dtype", "float32",
              "--rng", "torch", "--negative-prompt", NEGATIVE)
    out, err = cli_ok(capsys, *common, "--out", str(tmp_path / "a.png"))
    assert "pixart-sigma" in err and "--cfg-scale 4.5" in err, err
    expected = _diffusers(reference, 40, 24, num_inference_steps=3, guidance_scale=4.5,
                          use_resolution_binning=False)
    assert np.abs(png_pixels(out) - expected).mean() < TOL
    assert "diffusers" in cli_error(capsys, *common, "--sampler", "DDIM CFG++",
                                    "--out", str(tmp_path / "b.png"))
    init = tmp_path / "init.png"
    from PIL import Image

    Image.fromarray(np.zeros((24, 40, 3), np.uint8)).save(init)
    error = cli_error(capsys, "img2img", *common[1:], "--init-image", str(init),
                      "--out", str(tmp_path / "c.png"))
    assert "img2img" in error
    error = cli_error(capsys, *common[:6], "26", *common[7:], "--out", str(tmp_path / "d.png"))
    assert "multiple of 8" in error  # the command line's own check comes first


def test_pixart_through_the_api(first_device: gpucore.Device, tmp_path: Path) -> None:
    """/sdapi/v1/txt2img on a folder of sample size 32 with an 8x VAE (diffusers' 256
    table): no sampler named runs PixArt's own, 240 x 160 drawn at the 304 x 208 bin and
    resized back as diffusers' pipeline does by default; the infotext names the model; a
    sampler not wired (DDIM CFG++) is a 422 in one line."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    from pixart_tiny import VAE_8X_TINY, tiny_pixart_pipeline
    from server_support import info, pixels, serving

    from diffusion.pipelines.flow.pixart import pixart_binned_size

    reference = tiny_pixart_pipeline(tmp_path, vae=VAE_8X_TINY, sample_size=32)
    assert pixart_binned_size(32, 160, 240) == (208, 304)
    body = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "cfg_scale": 4.5, "steps": 2,
            "width": 240, "height": 160, "seed": 7,
            "override_settings": {"randn_source": "CPU"}}
    with serving(tmp_path, "pixart") as client:
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 200, response.text
        assert "Model: pixart" in info(response)["infotexts"][0]
        ours = pixels(response.json()["images"][0]) / np.float32(255)
        expected = _diffusers(reference, 240, 160, num_inference_steps=2, guidance_scale=4.5)
        assert ours.shape == expected.shape == (160, 240, 3)
        assert np.abs(ours - expected).mean() < TOL
        response = client.post("/sdapi/v1/txt2img", json={**body, "sampler_name": "DDIM CFG++"})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "DDIM CFG++" in detail and "\n" not in detail, detail


def test_pixart_single_file(first_device: gpucore.Device, tiny_pixart: tuple[Path, Any],
                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The transformer as the PixArt repository's .pth (its `state_dict`, original names)
    with a PixArt folder as --base whose transformer/ holds its config alone: the whole
    folder's picture bit for bit; without --base, one line saying what to add."""
    import shutil

    from pixart_tiny import original_layout

    folder, reference = tiny_pixart
    file = tmp_path / "pixart_tiny.pth"
    torch.save({"state_dict": original_layout(reference.transformer)}, file)
    slim = tmp_path / "pixart"
    shutil.copytree(folder, slim)
    for weights in (slim / "transformer").glob("*.safetensors*"):
        weights.unlink()
    common = ("txt2img", "--prompt", PROMPT, "--width", "40", "--height", "24", "--steps",
              "2", "--seed", "7", "--dtype", "float32", "--rng", "torch")
    out, err = cli_ok(capsys, *common, "--model", str(file), "--base", str(slim),
                      "--out", str(tmp_path / "file.png"))
    assert "pixart-sigma" in err, err
    single = png_pixels(out)
    out, _ = cli_ok(capsys, *common, "--model", str(folder), "--out", str(tmp_path / "d.png"))
    np.testing.assert_array_equal(single, png_pixels(out))
    error = cli_error(capsys, *common, "--model", str(file), "--out", str(tmp_path / "x.png"))
    assert "--base" in error and "PixArt" in error
