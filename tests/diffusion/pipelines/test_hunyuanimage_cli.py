"""HunyuanImage 2.1 through the command line: the family told from its diffusers folder,
HunyuanImagePipeline's defaults (50 steps, its guider's CFG scale, the "diffusers" sampler),
diffusers' picture with a quoted text in the prompt (the OCR guider at its own CFG scale
under the default one), Euler over the Simple schedule, First Block Cache, and what it refuses
in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
from cli_support import cli_error, cli_ok, png_pixels
from hunyuanimage_parts_tiny import (
    GUIDER_TINY,
    OCR_GUIDER_TINY,
    diffusers_picture,
    tiny_hunyuanimage_pipeline,
)
from webui_ref import assert_steps_skipped

import gpucore
from diffusion.infotext import read_infotext
from diffusion.pipelines.contract import SamplingDefaults
from diffusion.pipelines.families import capabilities_of
from diffusion.pipelines.load import model_defaults

PROMPT = 'a shop sign that says "OPEN" in red'
SIZE = dict(height=32, width=24, num_inference_steps=3)
TOL = 0.003  # mean |ours - diffusers| in [0, 1]: the PNG's rounding, measured 9e-4


def test_hunyuanimage_from_the_cli(first_device: gpucore.Device, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    reference = tiny_hunyuanimage_pipeline(tmp_path)
    folder = tmp_path / "hunyuanimage"
    capabilities = capabilities_of(folder)
    assert capabilities is not None and capabilities.family == "hunyuanimage-2.1"
    assert capabilities.guidance == "cfg"
    assert model_defaults(folder)[0] == SamplingDefaults(
        steps=50, sampler="diffusers", cfg_scale=GUIDER_TINY["guidance_scale"])
    common = ("txt2img", "--model", str(folder), "--width", "24", "--height", "32",
              "--steps", "3", "--rng", "torch", "--seed", "7", "--dtype", "float32",
              "--prompt", PROMPT)
    # the default CFG scale (the plain guider's) runs the OCR guider at its own
    assert OCR_GUIDER_TINY["guidance_scale"] != GUIDER_TINY["guidance_scale"]
    out, _ = cli_ok(capsys, *common, "--out", str(tmp_path / "a.png"))
    expected = diffusers_picture(reference, PROMPT, **SIZE)[0]
    got = png_pixels(out)
    assert np.abs(got - expected).mean() < TOL
    # Euler over the Simple schedule at 2 steps: diffusers' sigmas (the training table's at
    # 3: 3.5e-3 off) and step; APG (the OCR guider's from its second step) counts its calls
    out, _ = cli_ok(capsys, *common, "--sampler", "Euler", "--steps", "2",
                    "--out", str(tmp_path / "e.png"))
    two = diffusers_picture(reference, PROMPT, **{**SIZE, "num_inference_steps": 2})[0]
    assert np.abs(png_pixels(out) - two).mean() < TOL
    out, _ = cli_ok(capsys, *common, "--cfg-scale", "1", "--out", str(tmp_path / "b.png"))
    # the guidance matters (measured 0.012: the tiny model reads its text weakly)
    assert np.abs(png_pixels(out) - got).mean() > 3 * TOL
    # refusals, each in one line (the AND one once loaded, the others before)
    for more, words in ((("--sampler", "Heun"),
                         "choose one of Euler, Euler a, DPM++ 2M or 'diffusers'"),
                        (("--distilled-cfg-scale", "3"), "take no distilled guidance"),
                        (("--hr-scale", "2"), "the hires fix runs with the WebUI samplers"),
                        (("--sampler", "Euler", "--prompt", "a cat AND a dog"),
                         "2 parts joined by AND")):
        assert words in cli_error(capsys, *common, *more)
    assert "run with the WebUI samplers" in cli_error(
        capsys, "img2img", *common[1:], "--init-image", str(tmp_path / "a.png"))


def test_the_distilled_checkpoint(first_device: gpucore.Device, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The guidance-embedding transformer: 8 steps at CFG 1 by default, diffusers' picture
    at --distilled-cfg-scale (with Euler too), a CFG scale refused in one line."""
    reference = tiny_hunyuanimage_pipeline(tmp_path, distilled=True)
    folder = tmp_path / "hunyuanimage"
    capabilities = capabilities_of(folder)
    assert capabilities is not None and capabilities.guidance == "distilled"
    assert model_defaults(folder)[0] == SamplingDefaults(steps=8, sampler="diffusers",
                                                         cfg_scale=1.0)
    common = ("txt2img", "--model", str(folder), "--width", "24", "--height", "32",
              "--steps", "3", "--rng", "torch", "--seed", "7", "--dtype", "float32",
              "--prompt", PROMPT)
    out, _ = cli_ok(capsys, *common, "--distilled-cfg-scale", "4",
                    "--out", str(tmp_path / "a.png"))
    expected = diffusers_picture(reference, PROMPT, distilled_guidance_scale=4.0, **SIZE)[0]
    assert np.abs(png_pixels(out) - expected).mean() < TOL
    # Euler at 2 steps (diffusers' sigmas): meanflow's timestep_r the schedule's next sigma
    out, _ = cli_ok(capsys, *common, "--distilled-cfg-scale", "4", "--sampler", "Euler",
                    "--steps", "2", "--out", str(tmp_path / "e.png"))
    two = diffusers_picture(reference, PROMPT, distilled_guidance_scale=4.0,
                            **{**SIZE, "num_inference_steps": 2})[0]
    assert np.abs(png_pixels(out) - two).mean() < TOL
    assert "leave --cfg-scale at 1" in cli_error(capsys, *common, "--cfg-scale", "3")


def test_first_block_cache(first_device: gpucore.Device, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    """`--cache fbc:T` skips some steps and says so in the infotext, the picture visibly
    changed; another step cache refused in one line."""
    tiny_hunyuanimage_pipeline(tmp_path, distilled=True)
    threshold, steps = 0.6, 4  # a random tiny model moves far more than a trained one
    common = ("txt2img", "--model", str(tmp_path / "hunyuanimage"), "--width", "24",
              "--height", "32", "--steps", str(steps), "--rng", "torch", "--seed", "7",
              "--prompt", PROMPT)  # the distilled checkpoint: one model call a step
    out, _ = cli_ok(capsys, *common, "--cache", f"fbc:{threshold}",
                    "--out", str(tmp_path / "cached.png"))
    assert_steps_skipped(read_infotext(out) or "", threshold, steps)
    plain, _ = cli_ok(capsys, *common, "--out", str(tmp_path / "plain.png"))
    assert np.abs(png_pixels(out) - png_pixels(plain)).mean() > TOL  # the cache acted
    assert "it runs fbc" in cli_error(capsys, *common, "--cache", "magcache")
