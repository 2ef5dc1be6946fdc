"""Ideogram 4 through the command line like any model: the family and its defaults from the
folder, diffusers' picture with `--sampler diffusers --rng torch` (a constant guidance scale),
a WebUI sampler with the hires fix, FLUX.2's VAE file, img2img from a picture, and what it
refuses in one line (a negative prompt, a step cache, --base)."""

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
TOL = 0.01  # mean |ours - diffusers| in [0, 1] through a PNG (its rounding)


def _diffusers(reference: Any, scale: float) -> np.ndarray:
    with torch.no_grad():
        images = reference(RED, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                           guidance_scale=scale, guidance_schedule=None,
                           max_sequence_length=48, generator=torch.Generator().manual_seed(7),
                           output_type="np").images
    return np.asarray(images[0])


def _common(folder: Path, *more: str) -> tuple[str, ...]:
    return ("txt2img", "--model", str(folder), *SIZE, "--steps", "2", "--sampler", "diffusers",
            "--rng", "torch", "--seed", "7", "--dtype", "float32", "--prompt", RED, *more)


def test_ideogram4_from_the_cli(first_device: gpucore.Device,
                                tiny_ideogram4: tuple[Path, Any], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """The family and its defaults (48 steps at CFG 7, diffusers' loop); diffusers' picture at
    CFG 3."""
    folder, reference = tiny_ideogram4
    capabilities = capabilities_of(folder)
    assert capabilities is not None and capabilities.family == "ideogram4"
    assert model_defaults(folder)[0] == SamplingDefaults(steps=48, sampler="diffusers",
                                                         cfg_scale=7.0)
    out, _ = cli_ok(capsys, *_common(folder, "--cfg-scale", "3",
                                     "--out", str(tmp_path / "a.png")))
    assert np.abs(png_pixels(out) - _diffusers(reference, 3.0)).mean() < TOL


def test_webui_sampler_img2img_and_refusals(first_device: gpucore.Device,
                                            tiny_ideogram4: tuple[Path, Any], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Euler runs, with the hires fix too; FLUX.2's VAE as a --vae file gives the folder's
    picture bitwise; img2img starts from the picture (two pictures, two results); a negative
    prompt, a step cache and --base are refused in one line."""
    from PIL import Image
    from safetensors.torch import save_file

    folder, reference = tiny_ideogram4
    out, _ = cli_ok(capsys, "txt2img", "--model", str(folder), *SIZE, "--prompt", RED,
                    "--steps", "2", "--cfg-scale", "2", "--sampler", "Euler", "--seed", "3",
                    "--hr-scale", "2", "--hr-upscaler", "Latent", "--out", str(tmp_path / "e.png"))
    assert png_pixels(out).shape == (2 * HEIGHT, 2 * WIDTH, 3)
    vae = {k: v.contiguous() for k, v in reference.vae.state_dict().items()
           if not k.endswith("num_batches_tracked")}
    save_file(vae, str(tmp_path / "flux2-vae.safetensors"))
    plain, _ = cli_ok(capsys, *_common(folder, "--out", str(tmp_path / "plain.png")))
    out, _ = cli_ok(capsys, *_common(folder, "--vae", str(tmp_path / "flux2-vae.safetensors"),
                                     "--out", str(tmp_path / "vae.png")))
    np.testing.assert_array_equal(png_pixels(out), png_pixels(plain))
    rng = np.random.default_rng(5)
    pictures = []
    for name in ("p", "q"):
        Image.fromarray(rng.integers(0, 255, (HEIGHT, WIDTH, 3), np.uint8)).save(
            tmp_path / f"{name}.png")
        out, _ = cli_ok(capsys, "img2img", *_common(folder)[1:], "--init-image",
                        str(tmp_path / f"{name}.png"), "--strength", "0.5",
                        "--out", str(tmp_path / f"{name}-out.png"))
        pictures.append(png_pixels(out))
    assert np.abs(pictures[0] - pictures[1]).mean() > 3e-3
    common = _common(folder, "--out", str(tmp_path / "x.png"))
    assert "negative prompt" in cli_error(capsys, *common, "--negative-prompt", "blurry")
    assert "--base" in cli_error(capsys, *common, "--base", str(folder))
    assert "cache" in cli_error(capsys, *common, "--cache", "fbc:0.5")
    assert not (tmp_path / "x.png").exists()


def test_webui_euler_runs_the_logit_normal_schedule(first_device: gpucore.Device,
                                                    tiny_ideogram4: tuple[Path, Any],
                                                    tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Euler over the WebUI samplers' schedule ("Automatic") is diffusers' own loop over its
    logit-normal sigmas, started from the WebUI's noise (torch.randn of the latents' shape);
    "Simple" is refused in one line (the config's shifted sigmas are not what the model was
    trained for)."""
    folder, reference = tiny_ideogram4
    common = ("txt2img", "--model", str(folder), *SIZE, "--steps", "3", "--rng", "torch",
              "--seed", "7", "--dtype", "float32", "--prompt", RED, "--cfg-scale", "3",
              "--sampler", "Euler")
    out, _ = cli_ok(capsys, *common, "--out", str(tmp_path / "e.png"))
    channels, scale = reference.transformer.config.in_channels, 2 * reference.vae_scale_factor
    noise = torch.randn((1, channels, HEIGHT // scale, WIDTH // scale),
                        generator=torch.Generator().manual_seed(7))

    def diffusers(mu: float) -> np.ndarray:
        with torch.no_grad():
            return np.asarray(reference(
                RED, height=HEIGHT, width=WIDTH, num_inference_steps=3, guidance_scale=3.0,
                guidance_schedule=None, max_sequence_length=48, mu=mu,
                latents=noise.flatten(2).transpose(1, 2), output_type="np").images[0])

    got = png_pixels(out)
    # measured 8.5e-4 (the PNG's rounding and sigma_0 x noise against the noise itself)
    assert np.abs(got - diffusers(0.0)).mean() < 2e-3
    # another schedule (its mean moved by 1) draws another picture (0.062): the sigmas matter
    assert np.abs(got - diffusers(1.0)).mean() > 0.02
    assert "use Automatic" in cli_error(capsys, *common, "--scheduler", "Simple",
                                         "--out", str(tmp_path / "s.png"))
