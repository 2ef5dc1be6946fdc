"""HiDream-I1 through the command line: the family told from its diffusers folder, Full's
defaults (50 steps, the folder's UniPC as the "diffusers" sampler, CFG 5), diffusers' picture
at CFG 5 with a negative prompt, Euler over the shifted Simple schedule, and what it refuses
in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_pixels
from hidream_pipe_tiny import SIDE

import gpucore
from diffusion.pipelines.contract import SamplingDefaults
from diffusion.pipelines.families import capabilities_of
from diffusion.pipelines.load import model_defaults

PROMPT, NEGATIVE = "a red circle on a blue background", "a cat"
TOL = 0.003  # mean |ours - diffusers| in [0, 1]: the PNG's rounding


def test_hidream_from_the_cli(first_device: gpucore.Device, tiny_hidream: tuple[Path, Any],
                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, reference = tiny_hidream
    capabilities = capabilities_of(folder)
    assert capabilities is not None and capabilities.family == "hidream"
    assert model_defaults(folder)[0] == SamplingDefaults(steps=50, sampler="diffusers",
                                                         cfg_scale=5.0)
    common = ("txt2img", "--model", str(folder), "--width", str(SIDE), "--height", str(SIDE),
              "--steps", "2", "--rng", "torch", "--seed", "7", "--dtype", "float32",
              "--prompt", PROMPT, "--negative-prompt", NEGATIVE)
    out, _ = cli_ok(capsys, *common, "--out", str(tmp_path / "a.png"))
    with torch.no_grad():
        expected = reference(PROMPT, negative_prompt=NEGATIVE, height=SIDE, width=SIDE,
                             num_inference_steps=2, guidance_scale=5.0,
                             generator=torch.Generator().manual_seed(7),
                             output_type="np").images[0]
    got = png_pixels(out)
    assert np.abs(got - expected).mean() < TOL
    # Euler over the Simple schedule (UniPC's flow_shift as its shift) draws another picture
    out, _ = cli_ok(capsys, *common, "--sampler", "Euler", "--out", str(tmp_path / "e.png"))
    euler = png_pixels(out)
    assert np.isfinite(euler).all() and np.abs(euler - got).mean() > 3 * TOL
    # img2img runs with Euler (no reference here: diffusers has no HiDream img2img)
    out, _ = cli_ok(capsys, "img2img", *common[1:], "--sampler", "Euler", "--steps", "4",
                    "--init-image", str(tmp_path / "a.png"), "--strength", "0.5",
                    "--out", str(tmp_path / "i.png"))
    assert png_pixels(out).shape == got.shape
    # refusals, each in one line
    for more, words in ((("--base", str(folder)), "leave --base out"),
                        (("--text-encoder", str(tmp_path / "a.png")), "as a folder"),
                        (("--sampler", "Heun"),
                         "choose one of Euler, Euler a, DPM++ 2M or 'diffusers'")):
        assert words in cli_error(capsys, *common, *more)
    assert "WebUI's samplers only" in cli_error(
        capsys, "img2img", *common[1:], "--init-image", str(tmp_path / "a.png"))
