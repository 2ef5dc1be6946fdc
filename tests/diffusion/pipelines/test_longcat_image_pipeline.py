"""LongCat-Image: LongCatImagePipeline on gpustd against diffusers' (tiny, random, float32; the
prompt rewrite off), with CFG and its renorm, the prompt and the negative prompt visibly
mattering; through the command line like any model (the family detected from its folder, its
defaults, diffusers' picture with `--sampler diffusers --rng torch`, a WebUI sampler, First
Block Cache), and what it refuses in one line."""

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
from diffusion.pipelines.flow.longcat_image import LongCatImagePipeline, renormed_cfg
from diffusion.pipelines.load import model_defaults

HEIGHT, WIDTH = 24, 40  # 3 x 5 patches of 2 x 2 latents (the tiny VAE's 2x: 6 x 10 patches)
SIZE = ("--width", str(WIDTH), "--height", str(HEIGHT))
RED = "a red circle on a blue square"
HORSE = "an astronaut riding a horse with 'LongCat' written on it"
TOL = 0.01  # mean |ours - diffusers| in [0, 1] through a PNG (its rounding)


def _diffusers(reference: Any, prompt: str, steps: int = 2, **settings: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=steps,
                           generator=torch.Generator().manual_seed(7), output_type="np",
                           enable_prompt_rewrite=False, **settings).images
    return np.asarray(images[0])


@pytest.mark.nodevice
def test_renormed_cfg() -> None:
    """Each token's guided vector at most as long as the prompt's, at least cfg_renorm_min of
    its own length; float64 reference."""
    rng = np.random.default_rng(1)
    cond, uncond = (rng.standard_normal((2, 6, 8)).astype(np.float32) for _ in range(2))
    guided = uncond.astype(np.float64) + 4.5 * (cond.astype(np.float64) - uncond)
    ratio = np.linalg.norm(cond, axis=-1, keepdims=True) / np.linalg.norm(guided, axis=-1,
                                                                          keepdims=True)
    np.testing.assert_allclose(renormed_cfg(cond, uncond, 4.5), guided * np.minimum(ratio, 1),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(renormed_cfg(cond, uncond, 4.5, renorm_min=0.5),
                               guided * np.clip(ratio, 0.5, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(renormed_cfg(cond, uncond, 4.5, renorm=False), guided,
                               rtol=1e-5, atol=1e-6)


def test_pipeline_is_diffusers(first_device: gpucore.Device,
                               tiny_longcat: tuple[Path, Any]) -> None:
    """The picture at guidance 4.5 with renorm (diffusers' defaults) and without, the
    negative prompt's; the renorm and the prompt visibly matter."""
    folder, reference = tiny_longcat
    pipe = LongCatImagePipeline.from_pretrained(folder, device=first_device)

    def ours(prompt: str, **settings: Any) -> np.ndarray:
        return pipe(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=2, seed=7,
                    **settings)[0]

    guided = ours(RED, negative_prompt="blurry")
    expected = _diffusers(reference, RED, negative_prompt="blurry")
    # measured on lavapipe: 4.6e-7 mean, 2.6e-6 max
    np.testing.assert_allclose(guided, expected, atol=2e-5)
    plain = ours(RED, negative_prompt="blurry", enable_cfg_renorm=False)
    np.testing.assert_allclose(plain, _diffusers(reference, RED, negative_prompt="blurry",
                                                 enable_cfg_renorm=False), atol=2e-5)
    # the renorm acted (measured 2.1e-3: the tiny model's guided vectors are rarely longer)
    assert np.abs(plain - guided).mean() > 5e-4
    other = ours(HORSE, negative_prompt="blurry")
    assert np.abs(other - guided).mean() > 0.01  # the prompt matters


def _common(folder: Path, *more: str) -> tuple[str, ...]:
    return ("txt2img", "--model", str(folder), *SIZE, "--steps", "2", "--sampler", "diffusers",
            "--rng", "torch", "--seed", "7", "--dtype", "float32", *more)


def test_longcat_from_the_cli(first_device: gpucore.Device, tiny_longcat: tuple[Path, Any],
                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The family and its defaults (50 steps at CFG 4.5) from the folder; diffusers'
    picture at CFG 1 (no negative pass); CFG 4.5 with a negative prompt differs."""
    folder, reference = tiny_longcat
    capabilities = capabilities_of(folder)
    assert capabilities is not None and capabilities.family == "longcat-image"
    assert model_defaults(folder)[0] == SamplingDefaults(steps=50, sampler="Euler",
                                                         cfg_scale=4.5)
    out, _ = cli_ok(capsys, *_common(folder, "--prompt", RED, "--cfg-scale", "1",
                                       "--out", str(tmp_path / "a.png")))
    plain = png_pixels(out)
    assert np.abs(plain - _diffusers(reference, RED, guidance_scale=1.0)).mean() < TOL
    out, err = cli_ok(capsys, *_common(folder, "--prompt", RED, "--negative-prompt", HORSE,
                                       "--out", str(tmp_path / "b.png")))
    assert "--cfg-scale 4.5" in err
    assert np.abs(png_pixels(out) - plain).mean() > 2 * TOL  # CFG 4.5 by default


def test_webui_sampler_cache_and_refusals(first_device: gpucore.Device,
                                          tiny_longcat: tuple[Path, Any], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A WebUI sampler runs; `--cache fbc:T` skips steps and says so; MagCache, --base and an
    edit folder are refused in one line."""
    folder, _ = tiny_longcat
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
    assert not (tmp_path / "x.png").exists()


def test_img2img_and_vae_file(first_device: gpucore.Device, tiny_longcat: tuple[Path, Any],
                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """img2img with diffusers' loop starts from the init picture (two pictures, two results);
    FLUX.1's ae.safetensors (BFL's names) written from the folder's VAE as `--vae` gives the
    folder's picture bitwise, named in the infotext."""
    from PIL import Image
    from safetensors.torch import save_file
    from vae_layouts import flux_ae

    folder, reference = tiny_longcat
    common = _common(folder, "--prompt", RED, "--cfg-scale", "1")
    rng = np.random.default_rng(5)
    pictures = []
    for name in ("p", "q"):
        Image.fromarray(rng.integers(0, 255, (HEIGHT, WIDTH, 3), np.uint8)).save(
            tmp_path / f"{name}.png")
        out, _ = cli_ok(capsys, "img2img", *common[1:], "--init-image",
                        str(tmp_path / f"{name}.png"), "--strength", "0.25", "--steps", "8",
                        "--out", str(tmp_path / f"{name}-out.png"))
        pictures.append(png_pixels(out))
    # measured 8.8e-3: the tiny random model's two steps move far from any start, and its
    # VAE's decoder narrows what is left of the two pictures
    assert np.abs(pictures[0] - pictures[1]).mean() > 3e-3
    save_file(flux_ae(reference.vae), str(tmp_path / "ae.safetensors"))
    plain, _ = cli_ok(capsys, *common, "--out", str(tmp_path / "plain.png"))
    out, _ = cli_ok(capsys, *common, "--vae", str(tmp_path / "ae.safetensors"),
                    "--out", str(tmp_path / "vae.png"))
    np.testing.assert_array_equal(png_pixels(out), png_pixels(plain))
    assert "ae" in (read_infotext(out) or "")
