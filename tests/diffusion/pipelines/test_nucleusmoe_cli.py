"""NucleusMoE-Image through the command line like any model: the family detected from its
folder, its defaults, diffusers' NucleusMoEImagePipeline picture with `--sampler diffusers
--rng torch`, CFG with a negative prompt, img2img from the init picture, and what it refuses
in one line."""

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
from diffusion.pipelines.families import capabilities_of
from diffusion.pipelines.load import model_defaults

HEIGHT, WIDTH = 24, 40
SIZE = ("--width", str(WIDTH), "--height", str(HEIGHT))
RED = "a red circle on a blue square"
HORSE = "an astronaut riding a horse at night"
TOL = 0.003  # mean |ours - diffusers| in [0, 1] through a PNG (its rounding, <= 1/510)


def _common(folder: Path, *more: str) -> tuple[str, ...]:
    return ("txt2img", "--model", str(folder), *SIZE, "--steps", "2", "--sampler", "diffusers",
            "--rng", "torch", "--seed", "7", "--dtype", "float32", *more)


def test_nucleus_from_the_cli(first_device: gpucore.Device, tiny_nucleus: tuple[Path, Any],
                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The family and its defaults (50 steps at CFG 4) from the folder; diffusers' picture at
    CFG 4 with a negative prompt; CFG 1 (no negative pass) differs; --base and a step cache
    are refused in one line."""
    folder, reference = tiny_nucleus
    capabilities = capabilities_of(folder)
    assert capabilities is not None and capabilities.family == "nucleus-moe"
    assert model_defaults(folder)[0] == SamplingDefaults(steps=50, sampler="Euler",
                                                         cfg_scale=4.0)
    out, err = cli_ok(capsys, *_common(folder, "--prompt", RED, "--negative-prompt", HORSE,
                                       "--out", str(tmp_path / "a.png")))
    assert "--cfg-scale 4" in err
    guided = png_pixels(out)
    with torch.no_grad():
        expected = reference(RED, negative_prompt=HORSE, height=HEIGHT, width=WIDTH,
                             num_inference_steps=2, generator=torch.Generator().manual_seed(7),
                             output_type="np").images[0]
    assert np.abs(guided - expected).mean() < TOL  # measured 9.7e-4
    out, _ = cli_ok(capsys, *_common(folder, "--prompt", RED, "--cfg-scale", "1",
                                     "--out", str(tmp_path / "b.png")))
    assert np.abs(png_pixels(out) - guided).mean() > 2 * TOL  # measured
    for refused in (("--base", str(folder)), ("--cache", "fbc:0.2")):
        error = cli_error(capsys, *_common(folder, "--prompt", RED, *refused, "--out",
                                           str(tmp_path / "x.png")))
        assert refused[0] in error and "\n" not in error.strip()
    assert not (tmp_path / "x.png").exists()


def test_nucleus_img2img(first_device: gpucore.Device, tiny_nucleus: tuple[Path, Any],
                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """img2img with a WebUI sampler starts from the init picture: two pictures, two results."""
    from PIL import Image

    folder, _ = tiny_nucleus
    rng = np.random.default_rng(5)
    pictures = []
    for name in ("p", "q"):
        Image.fromarray(rng.integers(0, 255, (HEIGHT, WIDTH, 3), np.uint8)).save(
            tmp_path / f"{name}.png")
        out, _ = cli_ok(capsys, "img2img", "--model", str(folder), *SIZE, "--prompt", RED,
                        "--cfg-scale", "1", "--sampler", "Euler", "--seed", "3",
                        "--init-image", str(tmp_path / f"{name}.png"), "--strength", "0.3",
                        "--steps", "4", "--out", str(tmp_path / f"{name}-out.png"))
        pictures.append(png_pixels(out))
    assert np.abs(pictures[0] - pictures[1]).mean() > 0.01  # measured 0.029
