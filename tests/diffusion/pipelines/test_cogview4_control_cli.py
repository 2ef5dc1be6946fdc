"""CogView4-6B-Control through the command line and the server as FLUX.1 Canny / Depth dev
go: --control-image without --controlnet is the model's map (CogView4ControlPipeline's
picture with `--sampler diffusers --rng torch`, the same under --lowvram), a server unit with
model None gives the CLI's picture with Euler, and a missing map or a map for CogView4-6B are
one line (the server: a 4xx)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_pixels
from cogview4_tiny import tiny_cogview4_control
from PIL import Image

import gpucore

HEIGHT, WIDTH = 32, 48
RED = "a red circle on a blue square"
TOL = 0.01  # mean |ours - diffusers| in [0, 1] through a PNG (its rounding)


@pytest.fixture(scope="module")
def control_folder(tmp_path_factory: pytest.TempPathFactory, tiny_cogview4: tuple[Path, Any]
                   ) -> tuple[Path, Any, Path]:
    """(the control folder, diffusers' CogView4ControlPipeline, a random map's PNG)."""
    root = tmp_path_factory.mktemp("cogview4-control")
    reference = tiny_cogview4_control(root, tiny_cogview4[1])
    control = np.random.default_rng(8).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(control).save(root / "map.png")
    Image.fromarray(255 - control).save(root / "inverted.png")
    return root / "cogview4-control", reference, root


def _run(model: Path, out: Path, *more: str, sampler: str = "diffusers") -> tuple[str, ...]:
    return ("txt2img", "--model", str(model), "--prompt", RED, "--negative-prompt", "blurry",
            "--width", str(WIDTH), "--height", str(HEIGHT), "--steps", "2", "--cfg-scale", "4",
            "--sampler", sampler, "--seed", "7", "--dtype", "float32", "--out", str(out),
            *(("--rng", "torch") if sampler == "diffusers" else ()), *more)


def test_control_from_the_cli(first_device: gpucore.Device, tiny_cogview4: tuple[Path, Any],
                              control_folder: tuple[Path, Any, Path], tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    folder, reference, maps = control_folder
    torch.manual_seed(7)  # the map's posterior draw: torch's global generator
    with torch.no_grad():
        expected = reference(RED, negative_prompt="blurry", guidance_scale=4.0,
                             control_image=Image.open(maps / "map.png"), height=HEIGHT,
                             width=WIDTH, num_inference_steps=2, output_type="np",
                             generator=torch.Generator().manual_seed(7)).images[0]
    out, _ = cli_ok(capsys, *_run(folder, tmp_path / "a.png", "--control-image",
                                  str(maps / "map.png")))
    ours = png_pixels(out)
    assert np.abs(ours - expected).mean() < TOL
    # the memory mode moving the VAE that encodes the map in and out: the same picture
    low, _ = cli_ok(capsys, *_run(folder, tmp_path / "low.png", "--control-image",
                                  str(maps / "map.png"), "--lowvram"))
    np.testing.assert_array_equal(png_pixels(low), ours)
    inverted, _ = cli_ok(capsys, *_run(folder, tmp_path / "b.png", "--controlnet", "None",
                                       "--control-image", str(maps / "inverted.png")))
    assert np.abs(png_pixels(inverted) - ours).mean() > 2 * TOL  # the map matters
    assert "needs its control map" in cli_error(capsys, *_run(folder, tmp_path / "x.png"))
    assert "take none in their input" in cli_error(capsys, *_run(
        tiny_cogview4[0], tmp_path / "x.png", "--control-image", str(maps / "map.png")))
    assert not (tmp_path / "x.png").exists()


def test_control_through_the_server(first_device: gpucore.Device,
                                    control_folder: tuple[Path, Any, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    from server_support import info, pixels, png_b64, serving

    folder, _, maps = control_folder
    out, _ = cli_ok(capsys, *_run(folder, tmp_path / "e.png", "--control-image",
                                  str(maps / "map.png"), sampler="Euler"))
    unit = {"enabled": True, "image": png_b64(Image.open(maps / "map.png"))}
    body = {"prompt": RED, "negative_prompt": "blurry", "width": WIDTH, "height": HEIGHT,
            "steps": 2, "seed": 7, "cfg_scale": 4, "sampler_name": "Euler"}
    with serving(folder.parent, folder.name) as client:
        response = client.post("/sdapi/v1/txt2img", json={
            **body, "alwayson_scripts": {"controlnet": {"args": [unit]}}})
        assert response.status_code == 200, response.text
        got = pixels(response.json()["images"][0]) / 255
        assert np.abs(got - png_pixels(out)).max() <= 1 / 255
        assert 'ControlNet 0: "Module: none, Model: None' in info(response)["infotexts"][0]
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code // 100 == 4 and "control map" in response.text
