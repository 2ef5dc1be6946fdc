"""CogView4 through the command line like any model: the family and its defaults from the
folder, diffusers' picture with `--sampler diffusers --rng torch`, a WebUI sampler, First Block
Cache skipping steps, and what it refuses in one line (MagCache, --base, --vae)."""

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

HEIGHT, WIDTH = 32, 48
SIZE = ("--width", str(WIDTH), "--height", str(HEIGHT))
RED = "a red circle on a blue square"
HORSE = "an astronaut riding a horse"
TOL = 0.01  # mean |ours - diffusers| in [0, 1] through a PNG (its rounding)


def _common(folder: Path, *more: str) -> tuple[str, ...]:
    return ("txt2img", "--model", str(folder), *SIZE, "--steps", "2", "--sampler", "diffusers",
            "--rng", "torch", "--seed", "7", "--dtype", "float32", *more)


def test_cogview4_from_the_cli(first_device: gpucore.Device, tiny_cogview4: tuple[Path, Any],
                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The family and its defaults (50 steps at CFG 5) from the folder; diffusers' picture
    with a negative prompt at CFG 5, the same under --lowvram."""
    folder, reference = tiny_cogview4
    capabilities = capabilities_of(folder)
    assert capabilities is not None and capabilities.family == "cogview4"
    assert model_defaults(folder)[0] == SamplingDefaults(steps=50, sampler="Euler",
                                                         cfg_scale=5.0)
    out, err = cli_ok(capsys, *_common(folder, "--prompt", RED, "--negative-prompt", HORSE,
                                       "--out", str(tmp_path / "a.png")))
    assert "--cfg-scale 5" in err
    with torch.no_grad():
        expected = reference(RED, negative_prompt=HORSE, height=HEIGHT, width=WIDTH,
                             num_inference_steps=2, generator=torch.Generator().manual_seed(7),
                             output_type="np").images[0]
    assert np.abs(png_pixels(out) - expected).mean() < TOL
    # the memory mode moving GLM, the blocks and the VAE in and out: the same picture
    low, _ = cli_ok(capsys, *_common(folder, "--prompt", RED, "--negative-prompt", HORSE,
                                     "--lowvram", "--out", str(tmp_path / "low.png")))
    np.testing.assert_array_equal(png_pixels(low), png_pixels(out))


def test_sampler_cache_and_refusals(first_device: gpucore.Device,
                                    tiny_cogview4: tuple[Path, Any], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A WebUI sampler runs; `--cache fbc:T` skips steps and says so; MagCache, --base and
    --vae are refused in one line, before any picture is written."""
    folder, _ = tiny_cogview4
    out, _ = cli_ok(capsys, "txt2img", "--model", str(folder), *SIZE, "--prompt", RED,
                    "--steps", "2", "--cfg-scale", "1", "--sampler", "Euler", "--seed", "3",
                    "--out", str(tmp_path / "e.png"))
    assert png_pixels(out).shape == (HEIGHT, WIDTH, 3)
    threshold, steps = 1.5, 4
    common = _common(folder, "--prompt", RED, "--cfg-scale", "1")
    common = (*common[:common.index("--steps") + 1], str(steps),
              *common[common.index("--steps") + 2:])
    out, _ = cli_ok(capsys, *common, "--cache", f"fbc:{threshold}",
                    "--out", str(tmp_path / "cached.png"))
    assert_steps_skipped(read_infotext(out) or "", threshold, steps)
    assert "it runs fbc" in cli_error(capsys, *common, "--cache", "magcache",
                                      "--out", str(tmp_path / "x.png"))
    assert "--base" in cli_error(capsys, *common, "--base", str(folder),
                                 "--out", str(tmp_path / "x.png"))
    (tmp_path / "ae.safetensors").write_bytes(b"")
    assert "drop --vae" in cli_error(capsys, *common, "--vae", str(tmp_path / "ae.safetensors"),
                                     "--out", str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()
