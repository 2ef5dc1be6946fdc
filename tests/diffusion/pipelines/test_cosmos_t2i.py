"""Cosmos Predict2 Text2Image's pipeline against diffusers' Cosmos2TextToImagePipeline on
PyTorch CPU float32 (a tiny random folder of cosmos_tiny): the EDM Euler loop over Karras
sigmas with CFG and Cosmos' default negative prompt, the prompt visibly steering the latents,
the picture through the Wan VAE; the family from the command line; bad input in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from cli_support import cli_error, cli_ok, png_pixels
from support import assert_close

import gpucore
from diffusion.pipelines.contract import SamplingDefaults
from diffusion.pipelines.families import capabilities_of
from diffusion.pipelines.flow.cosmos import Cosmos2TextToImagePipeline
from diffusion.pipelines.load import model_defaults

PROMPT = "a red circle on a blue background"
SIZE = {"height": 32, "width": 48}  # 4 x 6 latents


def _theirs(pipe: Any, prompt: str, output_type: str, guidance: float) -> np.ndarray:
    with torch.no_grad():
        out = pipe(prompt, **SIZE, num_inference_steps=3, guidance_scale=guidance,
                   generator=torch.Generator().manual_seed(7), output_type=output_type)
    images = out.images
    return np.asarray(images[0] if output_type == "np" else images.numpy())


@pytest.fixture(scope="module")
def built(tiny_cosmos2_t2i: tuple[Path, Any]) -> tuple[Any, Path]:
    return tiny_cosmos2_t2i[1], tiny_cosmos2_t2i[0]  # the session's (flow_fixtures)


def test_cosmos2_text2image_equals_diffusers(first_device: gpucore.Device,
                                             built: tuple[Any, Path]) -> None:
    reference, folder = built
    ours = Cosmos2TextToImagePipeline.from_pretrained(folder, device=first_device)
    latents = ours(PROMPT, **SIZE, num_inference_steps=3, guidance_scale=3.0, seed=7,
                   output_type="latent")
    expected = _theirs(reference, PROMPT, "latent", 3.0)
    assert_close(latents, expected, tol=1e-4)  # measured 2.3e-5 of latents ~2.4
    # the prompt steers the latents (at CFG 1: the prompt's pass alone); a batch's first
    # picture draws the single one's noise
    plain = ours([PROMPT, "a green square"], **SIZE, num_inference_steps=3,
                 guidance_scale=1.0, seed=7, output_type="latent")
    assert np.abs(plain[1] - plain[0]).mean() > 0.02 * np.abs(plain[0]).mean()
    assert_close(plain[:1], _theirs(reference, PROMPT, "latent", 1.0), tol=1e-4)


def test_cosmos2_from_the_cli(first_device: gpucore.Device, built: tuple[Any, Path],
                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reference, folder = built
    capabilities = capabilities_of(folder)
    assert capabilities is not None and capabilities.family == "cosmos2-t2i"
    assert model_defaults(folder)[0] == SamplingDefaults(steps=35, sampler="diffusers",
                                                         cfg_scale=7.0)
    common = ("txt2img", "--model", str(folder), "--width", "48", "--height", "32",
              "--steps", "3", "--rng", "torch", "--seed", "7", "--dtype", "float32",
              "--cfg-scale", "3", "--prompt", PROMPT)
    out, _ = cli_ok(capsys, *common, "--out", str(tmp_path / "a.png"))
    got = png_pixels(out)  # rounded to levels; diffusers' truncated
    assert np.abs(got - _theirs(reference, PROMPT, "np", 3.0)).max() <= 1 / 255 + 1e-5
    for more, words in ((("--sampler", "Euler"), "choose 'diffusers'"),
                        (("--init-image", out), "leave the init image out"),
                        (("--text-encoder", out), "leave --base and --text-encoder out")):
        argv = ("img2img", *common[1:]) if more[0] == "--init-image" else common
        assert words in cli_error(capsys, *argv, *more)


@pytest.mark.nodevice
def test_cosmos2_refusals(tmp_path: Path) -> None:
    import json

    folder = tmp_path / "not-cosmos"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    from diffusion.loaders.cosmos import cosmos_family, load_cosmos_folder
    from diffusion.loaders.errors import WeightsError

    assert cosmos_family(folder) is None
    with pytest.raises(WeightsError, match="is not a Cosmos2TextToImagePipeline"):
        load_cosmos_folder(folder)
    with pytest.raises(ValueError, match="use_karras_sigmas"):
        Cosmos2TextToImagePipeline(transformer=None, vae=None, text_encoder=None,  # type: ignore[arg-type]
                                   tokenizer=None, scheduler_config={})  # type: ignore[arg-type]
