"""ERNIE-Image through the command line like any model: the family and its defaults told
from the folder, diffusers' ErnieImagePipeline picture with `--sampler diffusers --rng
torch` (the prompt enhancer off) and with Euler over the Simple schedule, img2img starting
from the init picture, First Block Cache, a single-file transformer with its folder as
--base, and what it refuses in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_pixels
from webui_ref import assert_steps_skipped

import gpucore
from diffusion.infotext import read_infotext
from diffusion.pipelines.contract import SamplingDefaults
from diffusion.pipelines.families import capabilities_of
from diffusion.pipelines.load import model_defaults

HEIGHT, WIDTH = 24, 40
SIZE = ("--width", str(WIDTH), "--height", str(HEIGHT))
RED = "a red circle on a blue square"
HORSE = "an astronaut riding a horse"
TOL = 0.01  # mean |ours - diffusers| in [0, 1] through a PNG (its rounding)


def _diffusers(reference: Any, prompt: str, **settings: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                           generator=torch.Generator().manual_seed(7), output_type="np",
                           use_pe=False, **settings).images
    return np.asarray(images[0])


def _common(folder: Path, sampler: str, *more: str) -> tuple[str, ...]:
    return ("txt2img", "--model", str(folder), *SIZE, "--steps", "2", "--sampler", sampler,
            "--rng", "torch", "--seed", "7", "--dtype", "float32", *more)


def test_ernie_from_the_cli(first_device: gpucore.Device, tiny_ernie: tuple[Path, Any],
                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The family and its defaults (50 steps at CFG 4) from the folder; diffusers' picture
    at CFG 4 with a negative prompt through its own loop and through Euler; CFG 1 differs."""
    folder, reference = tiny_ernie
    capabilities = capabilities_of(folder)
    assert capabilities is not None and capabilities.family == "ernie-image"
    assert model_defaults(folder)[0] == SamplingDefaults(steps=50, sampler="Euler",
                                                         cfg_scale=4.0)
    turbo = tmp_path / "ERNIE-Image-Turbo"  # the distilled model: its card's settings
    turbo.symlink_to(folder, target_is_directory=True)
    assert model_defaults(turbo)[0] == SamplingDefaults(steps=8, sampler="Euler",
                                                        cfg_scale=1.0)
    expected = _diffusers(reference, RED, negative_prompt=HORSE)
    for sampler in ("diffusers", "Euler"):
        out, err = cli_ok(capsys, *_common(folder, sampler, "--prompt", RED,
                                           "--negative-prompt", HORSE,
                                           "--out", str(tmp_path / f"{sampler}.png")))
        assert "--cfg-scale 4" in err
        assert np.abs(png_pixels(out) - expected).mean() < TOL
    out, _ = cli_ok(capsys, *_common(folder, "diffusers", "--prompt", RED, "--cfg-scale", "1",
                                     "--out", str(tmp_path / "plain.png")))
    assert np.abs(png_pixels(out) - expected).mean() > 2 * TOL


def test_img2img_and_refusals(first_device: gpucore.Device, tiny_ernie: tuple[Path, Any],
                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """img2img with diffusers' loop starts from the init picture (two pictures, two
    results); `--cache fbc:T` skips steps and says so; --base on a folder and MagCache are
    refused in one line."""
    from PIL import Image

    folder, _ = tiny_ernie
    common = _common(folder, "diffusers", "--prompt", RED, "--cfg-scale", "1")
    rng = np.random.default_rng(5)
    pictures = []
    for name in ("p", "q"):
        Image.fromarray(rng.integers(0, 255, (HEIGHT, WIDTH, 3), np.uint8)).save(
            tmp_path / f"{name}.png")
        out, _ = cli_ok(capsys, "img2img", *common[1:], "--init-image",
                        str(tmp_path / f"{name}.png"), "--strength", "0.25", "--steps", "8",
                        "--out", str(tmp_path / f"{name}-out.png"))
        pictures.append(png_pixels(out))
    assert np.abs(pictures[0] - pictures[1]).mean() > 3e-3
    assert "--base" in cli_error(capsys, *common, "--base", str(folder),
                                 "--out", str(tmp_path / "x.png"))
    threshold, steps = 1.5, 4
    cached = (*common[:common.index("--steps") + 1], str(steps),
              *common[common.index("--steps") + 2:])
    out, _ = cli_ok(capsys, *cached, "--cache", f"fbc:{threshold}",
                    "--out", str(tmp_path / "cached.png"))
    assert_steps_skipped(read_infotext(out) or "", threshold, steps)
    assert "it runs fbc" in cli_error(capsys, *common, "--cache", "magcache",
                                      "--out", str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()


def test_single_file_with_a_base(first_device: gpucore.Device, tiny_ernie: tuple[Path, Any],
                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ComfyUI's single-file transformer (diffusers' names under model.diffusion_model.) with
    the folder as --base gives the folder's picture bitwise; without a base, one line."""
    from safetensors.torch import save_file
    from sd_tiny import state_dict

    folder, reference = tiny_ernie
    file = tmp_path / "ernie-image-8b.safetensors"
    save_file({f"model.diffusion_model.{key}": torch.from_numpy(value) for key, value in
               state_dict(reference.transformer).items()}, str(file))
    assert capabilities_of(file) is not None
    common = ("--prompt", RED, "--cfg-scale", "1")
    plain, _ = cli_ok(capsys, *_common(folder, "diffusers", *common,
                                       "--out", str(tmp_path / "folder.png")))
    out, _ = cli_ok(capsys, *_common(file, "diffusers", *common, "--base", str(folder),
                                     "--out", str(tmp_path / "file.png")))
    np.testing.assert_array_equal(png_pixels(out), png_pixels(plain))
    assert "--base" in cli_error(capsys, *_common(file, "diffusers", *common,
                                                  "--out", str(tmp_path / "x.png")))
