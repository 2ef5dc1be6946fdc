"""Bria 3.2: BriaPipeline on gpustd against diffusers' (tiny, random, float32) with CFG on a
negative prompt and on the empty one (zeros), both schedules (the training sigmas shifted by
a constant; FLUX's dynamic shift), the prompt visibly mattering; through the command line like
any model (the family detected from its folder, its defaults, diffusers' picture with
`--sampler diffusers --rng torch`, a WebUI sampler, img2img), and what it refuses in one
line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_pixels
from flow_tiny import FLUX_DEV_SCHEDULER

import gpucore
from diffusion.pipelines.contract import SamplingDefaults
from diffusion.pipelines.families import capabilities_of
from diffusion.pipelines.flow.bria import BriaPipeline, training_sigmas
from diffusion.pipelines.load import model_defaults

HEIGHT, WIDTH = 24, 40  # 3 x 5 patches of 2 x 2 latents (the tiny VAE's 2x: 6 x 10 patches)
SIZE = ("--width", str(WIDTH), "--height", str(HEIGHT))
RED = "a red circle on a blue square"
HORSE = "an astronaut riding a horse"
TOL = 0.01  # mean |ours - diffusers| in [0, 1] through a PNG (its rounding)
SEQUENCE = 16  # max_sequence_length: the tiny models' cost is the text's length


def _diffusers(reference: Any, prompt: str, steps: int = 2, **settings: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=steps,
                           generator=torch.Generator().manual_seed(7), output_type="np",
                           **settings).images
    return np.asarray(images[0])


@pytest.mark.nodevice
def test_training_sigmas() -> None:
    from diffusers.pipelines.bria.pipeline_bria import get_original_sigmas

    for steps in (1, 2, 7, 30):
        np.testing.assert_array_equal(training_sigmas(steps), get_original_sigmas(1000, steps))


def test_pipeline_is_diffusers(first_device: gpucore.Device,
                               tiny_bria: tuple[Path, Any]) -> None:
    """The picture at guidance 5 with a negative prompt and with none (zero states), with
    the constant shift and with FLUX's dynamic one; the prompt and the negative visibly
    matter."""
    import diffusers

    folder, reference = tiny_bria
    pipe = BriaPipeline.from_pretrained(folder, device=first_device)

    def ours(prompt: str, **settings: Any) -> np.ndarray:
        return pipe(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=2, seed=7,
                    max_sequence_length=SEQUENCE, **settings)[0]

    guided = ours(RED, negative_prompt=HORSE)
    expected = _diffusers(reference, RED, negative_prompt=HORSE,
                          max_sequence_length=SEQUENCE)
    # measured on lavapipe: 6e-7 mean, 4e-6 max
    np.testing.assert_allclose(guided, expected, atol=1e-5)
    plain = ours(RED)
    np.testing.assert_allclose(plain, _diffusers(reference, RED, max_sequence_length=SEQUENCE),
                               atol=1e-5)
    assert np.abs(plain - guided).mean() > 0.01  # the negative prompt matters
    assert np.abs(ours(HORSE, negative_prompt=HORSE) - guided).mean() > 0.01
    scheduler = reference.scheduler
    try:
        reference.scheduler = diffusers.FlowMatchEulerDiscreteScheduler(**FLUX_DEV_SCHEDULER)
        pipe.scheduler_config = dict(reference.scheduler.config)
        np.testing.assert_allclose(ours(RED), _diffusers(reference, RED,
                                                         max_sequence_length=SEQUENCE),
                                   atol=1e-5)
    finally:
        reference.scheduler = scheduler
        pipe.scheduler_config = dict(scheduler.config)


def _common(folder: Path, *more: str) -> tuple[str, ...]:
    return ("txt2img", "--model", str(folder), *SIZE, "--steps", "2", "--sampler", "diffusers",
            "--rng", "torch", "--seed", "7", "--dtype", "float32", *more)


@pytest.mark.usefixtures("short_prompts")
def test_bria_from_the_cli(first_device: gpucore.Device, tiny_bria: tuple[Path, Any],
                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The family and its defaults (30 steps at CFG 5) from the folder; diffusers' picture
    at CFG 5 with a negative prompt, the same with the VAE given as a file; a WebUI sampler and
    img2img run; --base and a transformer of another VAE's latents refused."""
    folder, reference = tiny_bria
    capabilities = capabilities_of(folder)
    assert capabilities is not None and capabilities.family == "bria"
    assert model_defaults(folder)[0] == SamplingDefaults(steps=30, sampler="Euler",
                                                         cfg_scale=5.0)
    out, err = cli_ok(capsys, *_common(folder, "--prompt", RED, "--negative-prompt", HORSE,
                                       "--out", str(tmp_path / "a.png")))
    assert "--cfg-scale 5" in err
    expected = _diffusers(reference, RED, negative_prompt=HORSE, max_sequence_length=16)
    assert np.abs(png_pixels(out) - expected).mean() < TOL
    # the folder's VAE as one file (diffusers' names) gives the same picture
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in reference.vae.state_dict().items()},
              str(tmp_path / "vae.safetensors"))
    again, _ = cli_ok(capsys, *_common(folder, "--prompt", RED, "--negative-prompt", HORSE,
                                       "--vae", str(tmp_path / "vae.safetensors"),
                                       "--out", str(tmp_path / "v.png")))
    np.testing.assert_array_equal(png_pixels(again), png_pixels(out))
    out, _ = cli_ok(capsys, "txt2img", "--model", str(folder), *SIZE, "--prompt", RED,
                    "--steps", "2", "--sampler", "Euler", "--seed", "3",
                    "--out", str(tmp_path / "e.png"))
    assert png_pixels(out).shape == (HEIGHT, WIDTH, 3)
    from PIL import Image

    Image.fromarray(np.random.default_rng(5).integers(0, 255, (HEIGHT, WIDTH, 3), np.uint8)
                    ).save(tmp_path / "p.png")
    out, _ = cli_ok(capsys, "img2img", *_common(folder, "--prompt", RED)[1:], "--init-image",
                    str(tmp_path / "p.png"), "--strength", "0.5",
                    "--out", str(tmp_path / "i.png"))
    assert png_pixels(out).shape == (HEIGHT, WIDTH, 3)
    assert "--base" in cli_error(capsys, *_common(folder, "--prompt", RED), "--base",
                                 str(folder), "--out", str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()
    # a transformer that reads another VAE's latents: one line before any weights load
    import json
    import shutil

    other = tmp_path / "other"
    shutil.copytree(folder, other)
    config = other / "transformer" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "in_channels": 64}))
    assert "the VAE's latents have 4 channels" in cli_error(
        capsys, *_common(other, "--prompt", RED), "--out", str(tmp_path / "x.png"))
