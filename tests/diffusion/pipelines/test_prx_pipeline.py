"""PRX: PRXPipeline on gpustd against diffusers' (tiny, random, float32; resolution binning
off), with CFG, the prompt and the negative prompt visibly mattering, and its prompt cleaning;
through the command line like any model (the family detected from its folder, its defaults,
diffusers' picture with `--sampler diffusers --rng torch`, a WebUI sampler, img2img), and what
it refuses in one line."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_pixels

import gpucore
from diffusion.models.prx_prompt import basic_clean, clean_text
from diffusion.pipelines.contract import SamplingDefaults
from diffusion.pipelines.families import capabilities_of
from diffusion.pipelines.flow.prx import PRXPipeline
from diffusion.pipelines.load import model_defaults

HEIGHT, WIDTH = 24, 40  # the tiny VAE's 2x: 12 x 20 latents, 6 x 10 patches
SIZE = ("--width", str(WIDTH), "--height", str(HEIGHT))
RED = "a red circle on a blue square"
HORSE = "an astronaut riding a horse"
TOL = 0.01  # mean |ours - diffusers| in [0, 1] through a PNG (its rounding)


@pytest.fixture(autouse=True)
def _no_ftfy(monkeypatch: pytest.MonkeyPatch) -> None:
    """diffusers' cleaning calls ftfy, not installed here: its fix_text is the identity on
    the plain prompts these tests give (prx_prompt's stand-in is too)."""
    import diffusers.pipelines.prx.pipeline_prx as module

    monkeypatch.setattr(module, "ftfy", types.SimpleNamespace(fix_text=lambda t: t),
                        raising=False)


def _diffusers(reference: Any, prompt: str, steps: int = 2, **settings: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=steps,
                           generator=torch.Generator().manual_seed(7), output_type="np",
                           use_resolution_binning=False, **settings).images
    return np.asarray(images[0])


@pytest.mark.nodevice
def test_cleaning_is_diffusers() -> None:
    """DeepFloyd's cleaning and the light one, as diffusers' TextPreprocessor (ftfy as the
    fixture sets it)."""
    from diffusers.pipelines.prx.pipeline_prx import TextPreprocessor

    cleaner = TextPreprocessor()
    for text in ("A Photo of www.example.com/cat.png by @someone #123 -- FREE SHIPPING!!",
                 "a  red\\ncircle &amp; a [blue] square... jc6640 1920x1080", RED,
                 "this-is-my-cute-cat_photo 10:45 \"quoted\"", "&lt;b&gt;bold&lt;/b&gt; "):
        assert clean_text(text) == cleaner.clean_text(text)
        assert basic_clean(text) == cleaner.basic_clean(text)


def test_pipeline_is_diffusers(first_device: gpucore.Device, tiny_prx: tuple[Path, Any]
                               ) -> None:
    """The picture at guidance 4 (diffusers' default) with a negative prompt, and at 1 (one
    pass); the prompt and the negative prompt visibly matter."""
    folder, reference = tiny_prx
    pipe = PRXPipeline.from_pretrained(folder, device=first_device)

    def ours(prompt: str, **settings: Any) -> np.ndarray:
        return pipe(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=2, seed=7,
                    **settings)[0]

    guided = ours(RED, negative_prompt="blurry")
    # measured on lavapipe: 8.5e-6 max, 1.2e-6 mean (the pictures vary by 0.19 about their mean)
    np.testing.assert_allclose(guided, _diffusers(reference, RED, negative_prompt="blurry"),
                               atol=2e-5)
    plain = ours(RED, guidance_scale=1.0)
    np.testing.assert_allclose(plain, _diffusers(reference, RED, guidance_scale=1.0),
                               atol=2e-5)
    assert np.abs(ours(HORSE, negative_prompt="blurry") - guided).mean() > 0.01
    assert np.abs(ours(RED, negative_prompt=HORSE) - guided).mean() > 0.01


def _common(folder: Path, *more: str) -> tuple[str, ...]:
    return ("txt2img", "--model", str(folder), *SIZE, "--steps", "2", "--sampler", "diffusers",
            "--rng", "torch", "--seed", "7", "--dtype", "float32", *more)


def test_prx_from_the_cli(first_device: gpucore.Device, tiny_prx: tuple[Path, Any],
                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The family and its defaults (28 steps at CFG 4) from the folder; diffusers' picture
    at CFG 4 with a negative prompt, the same under --lowvram (the blocks streamed) and with
    the VAE given as FLUX.1's ae.safetensors; a WebUI
    sampler and img2img run; --base and a step cache refused."""
    from PIL import Image
    from safetensors.torch import save_file
    from vae_layouts import flux_ae

    folder, reference = tiny_prx
    capabilities = capabilities_of(folder)
    assert capabilities is not None and capabilities.family == "prx"
    assert model_defaults(folder)[0] == SamplingDefaults(steps=28, sampler="Euler",
                                                         cfg_scale=4.0)
    out, err = cli_ok(capsys, *_common(folder, "--prompt", RED, "--negative-prompt", HORSE,
                                       "--out", str(tmp_path / "a.png")))
    assert "--cfg-scale 4" in err
    expected = _diffusers(reference, RED, negative_prompt=HORSE)
    assert np.abs(png_pixels(out) - expected).mean() < TOL
    low, _ = cli_ok(capsys, *_common(folder, "--prompt", RED, "--negative-prompt", HORSE,
                                     "--lowvram", "--out", str(tmp_path / "low.png")))
    np.testing.assert_array_equal(png_pixels(low), png_pixels(out))
    # FLUX.1's ae.safetensors (BFL's names) written from the folder's VAE: the same picture
    save_file(flux_ae(reference.vae), str(tmp_path / "ae.safetensors"))
    vae, _ = cli_ok(capsys, *_common(folder, "--prompt", RED, "--negative-prompt", HORSE,
                                     "--vae", str(tmp_path / "ae.safetensors"),
                                     "--out", str(tmp_path / "vae.png")))
    np.testing.assert_array_equal(png_pixels(vae), png_pixels(out))
    out, _ = cli_ok(capsys, "txt2img", "--model", str(folder), *SIZE, "--prompt", RED,
                    "--steps", "2", "--cfg-scale", "1", "--sampler", "Euler", "--seed", "3",
                    "--out", str(tmp_path / "e.png"))
    assert png_pixels(out).shape == (HEIGHT, WIDTH, 3)
    Image.fromarray(np.random.default_rng(5).integers(0, 255, (HEIGHT, WIDTH, 3), np.uint8)
                    ).save(tmp_path / "p.png")
    out, _ = cli_ok(capsys, "img2img", *_common(folder, "--prompt", RED)[1:], "--init-image",
                    str(tmp_path / "p.png"), "--strength", "0.5",
                    "--out", str(tmp_path / "i.png"))
    assert png_pixels(out).shape == (HEIGHT, WIDTH, 3)
    assert "--base" in cli_error(capsys, *_common(folder, "--prompt", RED), "--base",
                                 str(folder), "--out", str(tmp_path / "x.png"))
    assert "fbc" in cli_error(capsys, *_common(folder, "--prompt", RED), "--cache", "fbc:0.5",
                              "--out", str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()
