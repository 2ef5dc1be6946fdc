"""Qwen-Image 2.1 through the command line like any model: the family detected from its
diffusers folder, QwenImage21Pipeline's defaults (40 steps, or as many as the author's
sigmas), diffusers' picture with `--sampler diffusers --rng torch` (with and without true CFG,
over evenly spaced sigmas and over the author's), the prompt visibly mattering, a WebUI
sampler and inpainting running, First Block Cache, and what it refuses in one line before
loading (editing: test_qwenimage21_edit.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_ok, png_pixels
from PIL import Image
from qwenimage21_tiny import tiny_qwenimage21_pipeline
from webui_ref import assert_steps_skipped

import diffusion.cli.main as cli
import gpucore
from diffusion.infotext import read_infotext
from diffusion.pipelines.contract import SamplingDefaults
from diffusion.pipelines.families import capabilities_of
from diffusion.pipelines.load import model_defaults

HEIGHT, WIDTH = 64, 96  # 4 x 6 latents: 24 picture tokens
SIZE = ("--width", str(WIDTH), "--height", str(HEIGHT))
RED = "a red circle on a blue square, " * 3
HORSE = "an astronaut riding a horse at night, " * 3
SIGMAS = [1.0, 0.6, 0.25]
TOL = 0.01  # mean |ours - diffusers| in [0, 1]: the PNG's rounding (float: 3.1e-6 mean, 4.7e-5 max)


@pytest.fixture(scope="module")
def tiny(tiny_qwenimage21: tuple[Path, Any]) -> tuple[Path, Any]:
    return tiny_qwenimage21  # the session's, shared with the server's test


def _diffusers(reference: Any, prompt: str, steps: int = 2, **settings: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=steps,
                           generator=torch.Generator().manual_seed(7), output_type="np",
                           **settings).images
    return images[0][..., :3]  # the VAE's alpha channel: our pictures are written opaque


def test_qwenimage21_from_the_cli(first_device: gpucore.Device, tiny: tuple[Path, Any],
                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """QwenImage21Pipeline's defaults and its picture; the prompt and the negative pass
    visibly change it."""
    folder, reference = tiny
    assert model_defaults(folder)[0] == SamplingDefaults(steps=40, sampler="Euler",
                                                         cfg_scale=1.0)
    common = ("txt2img", "--model", str(folder), *SIZE, "--steps", "2", "--sampler",
              "diffusers", "--rng", "torch", "--seed", "7", "--dtype", "float32")
    out, _ = cli_ok(capsys, *common, "--prompt", RED, "--cfg-scale", "1",
                    "--out", str(tmp_path / "a.png"))
    plain = png_pixels(out)
    assert np.abs(plain - _diffusers(reference, RED)).mean() < TOL
    out, _ = cli_ok(capsys, *common, "--prompt", HORSE, "--cfg-scale", "1",
                    "--out", str(tmp_path / "b.png"))
    other = png_pixels(out)
    assert np.abs(other - plain).mean() > 5 * TOL  # the prompt matters (the test's premise)
    assert np.abs(other - _diffusers(reference, HORSE)).mean() < TOL
    out, _ = cli_ok(capsys, *common, "--prompt", RED, "--negative-prompt", "a photo of a cat",
                    "--cfg-scale", "4", "--out", str(tmp_path / "c.png"))
    guided = png_pixels(out)
    assert np.abs(guided - _diffusers(reference, RED, negative_prompt="a photo of a cat",
                                      true_cfg_scale=4.0)).mean() < TOL
    assert np.abs(guided - plain).mean() > 5 * TOL  # the negative pass matters too


def test_the_authors_sigmas(first_device: gpucore.Device, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    """model_index.json's sample_sigmas: the default step count, the picture diffusers
    draws over them; another step count samples 1 .. 1/n."""
    reference = tiny_qwenimage21_pipeline(tmp_path, sample_sigmas=SIGMAS)
    folder = tmp_path / "qwen-image-2.1"
    assert model_defaults(folder)[0].steps == len(SIGMAS)
    out, _ = cli_ok(capsys, "txt2img", "--model", str(folder), *SIZE, "--prompt", RED,
                    "--steps", str(len(SIGMAS)), "--sampler", "diffusers", "--rng", "torch",
                    "--seed", "7", "--dtype", "float32", "--out", str(tmp_path / "a.png"))
    assert np.abs(png_pixels(out) - _diffusers(reference, RED, steps=len(SIGMAS))).mean() < TOL


def test_webui_sampler_and_inpainting(first_device: gpucore.Device, tiny: tuple[Path, Any],
                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    """A WebUI sampler over the shifted Simple schedule, and inpainting its picture (the init
    image also the condition picture, as img2img's editing reads it): the unmasked half's
    pixels kept, the masked one repainted."""
    folder, _ = tiny
    common = ("--model", str(folder), *SIZE, "--prompt", RED, "--steps", "4",
              "--sampler", "Euler", "--seed", "3", "--dtype", "float32")
    out, _ = cli_ok(capsys, "txt2img", *common, "--out", str(tmp_path / "a.png"))
    first = png_pixels(out)
    assert first.shape == (HEIGHT, WIDTH, 3)
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[:, : WIDTH // 2] = 255  # repaint the left half
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out, _ = cli_ok(capsys, "inpaint", *common, "--init-image", str(tmp_path / "a.png"),
                    "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "c.png"))
    painted = png_pixels(out)
    assert np.abs(painted[:, WIDTH // 2 + 16:] - first[:, WIDTH // 2 + 16:]).max() == 0
    assert np.abs(painted[:, : WIDTH // 2 - 16] - first[:, : WIDTH // 2 - 16]).mean() > TOL


def test_first_block_cache_and_what_it_does_not_take(
        first_device: gpucore.Device, tiny: tuple[Path, Any], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`--cache fbc:T` skips some steps and says so in the infotext, the picture visibly
    changed (its flows against diffusers' hook: test_step_cache_qwen21); MagCache, whose
    table is FLUX's, is refused in one line before loading."""
    folder, _ = tiny
    capabilities = capabilities_of(folder)
    assert capabilities is not None and capabilities.family == "qwen-image-2.1"
    threshold, steps = 1.5, 4  # a random tiny model moves far more than a trained one
    common = ("txt2img", "--model", str(folder), *SIZE, "--steps", str(steps), "--sampler",
              "diffusers", "--rng", "torch", "--seed", "7", "--dtype", "float32",
              "--prompt", RED)
    out, _ = cli_ok(capsys, *common, "--cache", f"fbc:{threshold}",
                    "--out", str(tmp_path / "cached.png"))
    assert_steps_skipped(read_infotext(out) or "", threshold, steps)
    plain, _ = cli_ok(capsys, *common, "--out", str(tmp_path / "plain.png"))
    assert np.abs(png_pixels(out) - png_pixels(plain)).mean() > TOL  # the cache acted
    code = cli.main([*common, "--cache", "magcache", "--out", str(tmp_path / "x.png")])
    errors = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("error:")]
    assert code != 0 and len(errors) == 1 and "it runs fbc" in errors[0], errors
    assert not (tmp_path / "x.png").exists()
