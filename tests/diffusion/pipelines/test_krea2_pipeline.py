"""Krea 2 through the command line like any model: the family detected from its diffusers
folder, Krea2Pipeline's defaults (28 steps at guidance 4.5, CFG 5.5; the distilled
checkpoint's 8 at CFG 1), diffusers' picture with `--sampler diffusers --rng torch` (with and
without CFG, the distilled checkpoint's fixed shift), the prompt and the negative prompt
visibly mattering, float16 near float32, a WebUI sampler, img2img and inpainting running,
First Block Cache, and what it refuses in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_pixels
from krea2_tiny import tiny_krea2_pipeline
from PIL import Image
from webui_ref import assert_steps_skipped

import gpucore
from diffusion.infotext import read_infotext
from diffusion.pipelines.contract import SamplingDefaults
from diffusion.pipelines.families import capabilities_of
from diffusion.pipelines.load import model_defaults

HEIGHT, WIDTH = 24, 40  # 3 x 5 patches of 2 x 2 latents (the tiny VAE's 4x)
SIZE = ("--width", str(WIDTH), "--height", str(HEIGHT))
RED = "a red circle on a blue square"
HORSE = "an astronaut riding a horse at night"
TOL = 0.01  # mean |ours - diffusers| in [0, 1]: the PNG's rounding (float: 8e-7 mean, 8e-6 max)


def _diffusers(reference: Any, prompt: str, steps: int = 2, **settings: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=steps,
                           generator=torch.Generator().manual_seed(7), output_type="np",
                           **settings).images
    return np.asarray(images[0])


def _common(folder: Path, *more: str) -> tuple[str, ...]:
    return ("txt2img", "--model", str(folder), *SIZE, "--steps", "2", "--sampler", "diffusers",
            "--rng", "torch", "--seed", "7", "--dtype", "float32", *more)


def test_krea2_from_the_cli(first_device: gpucore.Device, tiny_krea2: tuple[Path, Any],
                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Krea2Pipeline's defaults and its picture at CFG 5.5 (its guidance_scale 4.5, an empty
    negative prompt) and at CFG 1 (guidance 0); the prompt and the negative prompt visibly
    change it."""
    folder, reference = tiny_krea2
    capabilities = capabilities_of(folder)
    assert capabilities is not None and capabilities.family == "krea-2"
    assert model_defaults(folder)[0] == SamplingDefaults(steps=28, sampler="Euler",
                                                         cfg_scale=5.5)
    out, err = cli_ok(capsys, *_common(folder, "--prompt", RED, "--out", str(tmp_path / "a.png")))
    assert "--cfg-scale 5.5" in err
    guided = png_pixels(out)
    assert np.abs(guided - _diffusers(reference, RED, guidance_scale=4.5)).mean() < TOL
    out, _ = cli_ok(capsys, *_common(folder, "--prompt", RED, "--cfg-scale", "1",
                                     "--out", str(tmp_path / "b.png")))
    plain = png_pixels(out)
    assert np.abs(plain - _diffusers(reference, RED, guidance_scale=0.0)).mean() < TOL
    assert np.abs(plain - guided).mean() > 5 * TOL  # the negative pass matters
    out, _ = cli_ok(capsys, *_common(folder, "--prompt", HORSE, "--cfg-scale", "1",
                                     "--out", str(tmp_path / "c.png")))
    # the prompt matters (measured 0.028: the tiny model reads its text weakly at CFG 1)
    assert np.abs(png_pixels(out) - plain).mean() > 2 * TOL
    out, _ = cli_ok(capsys, *_common(folder, "--prompt", RED, "--negative-prompt", HORSE,
                                     "--cfg-scale", "3", "--out", str(tmp_path / "d.png")))
    expected = _diffusers(reference, RED, guidance_scale=2.0, negative_prompt=HORSE)
    assert np.abs(png_pixels(out) - expected).mean() < TOL
    # float16 near float32 (the tiny model's picture; measured 2e-3 mean)
    out, _ = cli_ok(capsys, *_common(folder, "--prompt", RED, "--cfg-scale", "1", "--dtype",
                                     "float16", "--out", str(tmp_path / "e.png")))
    assert np.abs(png_pixels(out) - plain).mean() < 3 * TOL


def test_the_distilled_checkpoint(first_device: gpucore.Device, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """model_index.json's is_distilled: 8 steps at CFG 1 by default, the fixed shift mu =
    1.15 (diffusers' picture at guidance 0)."""
    reference = tiny_krea2_pipeline(tmp_path, distilled=True)
    folder = tmp_path / "krea-2"
    assert model_defaults(folder)[0] == SamplingDefaults(steps=8, sampler="Euler",
                                                         cfg_scale=1.0)
    out, _ = cli_ok(capsys, *_common(folder, "--prompt", RED, "--out", str(tmp_path / "a.png")))
    assert np.abs(png_pixels(out) - _diffusers(reference, RED, guidance_scale=0.0)).mean() < TOL


def test_webui_sampler_img2img_and_inpainting(
        first_device: gpucore.Device, tiny_krea2: tuple[Path, Any], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A WebUI sampler over the shifted Simple schedule; img2img from two init pictures
    (its picture and a white one): they visibly matter, less at a higher strength; inpainting keeps
    the unmasked part's pixels."""
    folder, _ = tiny_krea2
    common = ("--model", str(folder), *SIZE, "--prompt", RED, "--steps", "4", "--cfg-scale",
              "1", "--sampler", "Euler", "--seed", "3", "--dtype", "float32")
    out, _ = cli_ok(capsys, "txt2img", *common, "--out", str(tmp_path / "a.png"))
    first = png_pixels(out)
    assert first.shape == (HEIGHT, WIDTH, 3)
    Image.new("RGB", (WIDTH, HEIGHT), "white").save(tmp_path / "white.png")
    apart = []
    for strength in ("0.25", "0.9"):
        pictures = [png_pixels(cli_ok(capsys, "img2img", *common, "--init-image",
                                      str(tmp_path / f"{name}.png"), "--strength", strength,
                                      "--out", str(tmp_path / f"{name}{strength}.png"))[0])
                    for name in ("a", "white")]
        apart.append(np.abs(pictures[0] - pictures[1]).mean())
    # measured 0.020 and 0: the tiny model's velocities are large, so its one step from the
    # init picture at 0.25 moves it far; at 0.9 the start is as good as noise
    assert apart[0] > max(TOL, 2 * apart[1]), apart
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[:, :16] = 255  # repaint the left 16 columns; the mask's blur reaches ~12 past them
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out, _ = cli_ok(capsys, "inpaint", *common, "--init-image", str(tmp_path / "a.png"),
                    "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "c.png"))
    painted = png_pixels(out)
    assert np.abs(painted[:, 32:] - first[:, 32:]).max() == 0
    assert np.abs(painted[:, :8] - first[:, :8]).mean() > TOL


def test_first_block_cache_and_refusals(first_device: gpucore.Device,
                                        tiny_krea2: tuple[Path, Any], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`--cache fbc:T` skips some steps and says so in the infotext, the picture visibly
    changed; MagCache, a ControlNet unit and a --text-encoder file refused in one line."""
    folder, _ = tiny_krea2
    threshold, steps = 1.5, 4  # a random tiny model moves far more than a trained one
    common = ("txt2img", "--model", str(folder), *SIZE, "--steps", str(steps), "--sampler",
              "diffusers", "--rng", "torch", "--seed", "7", "--dtype", "float32",
              "--prompt", RED, "--cfg-scale", "1")  # one model call a step
    out, _ = cli_ok(capsys, *common, "--cache", f"fbc:{threshold}",
                    "--out", str(tmp_path / "cached.png"))
    assert_steps_skipped(read_infotext(out) or "", threshold, steps)
    plain, _ = cli_ok(capsys, *common, "--out", str(tmp_path / "plain.png"))
    assert np.abs(png_pixels(out) - png_pixels(plain)).mean() > TOL  # the cache acted
    assert "it runs fbc" in cli_error(capsys, *common, "--cache", "magcache",
                                      "--out", str(tmp_path / "x.png"))
    assert "--text-encoder" in cli_error(capsys, *common, "--text-encoder", str(folder),
                                         "--out", str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()
