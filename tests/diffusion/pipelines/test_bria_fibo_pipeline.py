"""Bria FIBO: BriaFiboPipeline on gpustd against diffusers' (tiny, random, float32), with CFG
(the empty negative prompt's token 128000, a negative prompt of its own length), the prompt
visibly mattering; through the command line like any model (the family detected from its
folder, its defaults, diffusers' picture with `--rng torch`), and what it refuses in one
line."""

from __future__ import annotations

import json
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
from diffusion.pipelines.flow.bria_fibo import BriaFiboPipeline
from diffusion.pipelines.load import model_defaults

HEIGHT, WIDTH = 48, 80  # 3 x 5 latent pixels of Wan 2.2's 16x VAE
SIZE = ("--width", str(WIDTH), "--height", str(HEIGHT))
RED = json.dumps({"short_description": "a red circle on a blue square"})
HORSE = "an astronaut riding a horse"
TOL = 0.01  # mean |ours - diffusers| in [0, 1] through a PNG (its rounding)


@pytest.fixture(scope="module")
def tiny_fibo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from bria_fibo_tiny import tiny_fibo_pipeline

    root = tmp_path_factory.mktemp("tiny-fibo")
    return root / "fibo", tiny_fibo_pipeline(root)


def _diffusers(reference: Any, prompt: str, steps: int = 2, **settings: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=steps,
                           generator=torch.Generator().manual_seed(7), output_type="np",
                           **settings).images
    return np.asarray(images[0])


def test_pipeline_is_diffusers(first_device: gpucore.Device,
                               tiny_fibo: tuple[Path, Any]) -> None:
    """The picture at guidance 5 (the empty negative prompt: one token, the prompt's padding
    masked in diffusers) and with a negative prompt; the prompt visibly matters."""
    folder, reference = tiny_fibo
    pipe = BriaFiboPipeline.from_pretrained(folder, device=first_device)

    def ours(prompt: str, **settings: Any) -> np.ndarray:
        return pipe(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=2, seed=7,
                    **settings)[0]

    guided = ours(RED)
    # measured on lavapipe: 1.5e-5 max, 1.3e-6 mean (of pictures spread 0.15 about their mean)
    np.testing.assert_allclose(guided, _diffusers(reference, RED), atol=5e-5)
    negative = ours(RED, negative_prompt=HORSE)
    np.testing.assert_allclose(negative, _diffusers(reference, RED, negative_prompt=HORSE),
                               atol=5e-5)
    assert np.abs(ours(HORSE) - guided).mean() > 0.01  # the prompt matters


def _common(folder: Path, *more: str) -> tuple[str, ...]:
    return ("txt2img", "--model", str(folder), *SIZE, "--steps", "2", "--rng", "torch",
            "--seed", "7", "--dtype", "float32", *more)


def test_fibo_from_the_cli(first_device: gpucore.Device, tiny_fibo: tuple[Path, Any],
                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The family and its defaults (30 steps at CFG 5, its own loop) from the folder;
    diffusers' picture at CFG 1; a WebUI sampler and an init image refused in one line."""
    folder, reference = tiny_fibo
    capabilities = capabilities_of(folder)
    assert capabilities is not None and capabilities.family == "bria-fibo"
    defaults = model_defaults(folder)[0]
    assert (defaults.steps, defaults.sampler, defaults.cfg_scale) == (30, "diffusers", 5.0)
    assert isinstance(defaults, SamplingDefaults)
    out, _ = cli_ok(capsys, *_common(folder, "--prompt", RED, "--cfg-scale", "1",
                                       "--out", str(tmp_path / "a.png")))
    assert np.abs(png_pixels(out) - _diffusers(reference, RED, guidance_scale=1.0)).mean() < TOL
    error = cli_error(capsys, *_common(folder, "--prompt", RED, "--sampler", "Euler",
                                       "--out", str(tmp_path / "x.png")))
    assert "Bria FIBO" in error and "\n" not in error.strip()
    assert not (tmp_path / "x.png").exists()


def test_folder_refusals(first_device: gpucore.Device, tiny_fibo: tuple[Path, Any],
                         tmp_path: Path) -> None:
    """A folder without tokenizer.json, or whose VAE is Wan 2.1's 8x one, refused in one
    line naming what to give."""
    import shutil

    from diffusion.loaders.errors import WeightsError

    folder, _ = tiny_fibo
    broken = tmp_path / "no-tokenizer"
    shutil.copytree(folder, broken)
    (broken / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(WeightsError, match=r"tokenizer\.json: required file is missing"):
        BriaFiboPipeline.from_pretrained(broken, device=first_device)
    from bria_fibo_tiny import tiny_wan_vae

    other = tmp_path / "wan21-vae"
    shutil.copytree(folder, other)
    shutil.rmtree(other / "vae")
    tiny_wan_vae().save_pretrained(other / "vae")
    with pytest.raises(ValueError, match=r"Wan 2\.2's VAE .* is 8x with 4 channels"):
        BriaFiboPipeline.from_pretrained(other, device=first_device)
