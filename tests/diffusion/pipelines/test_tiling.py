"""The WebUI's Tiling (`tiling`, `--tiling`): every Conv2d of the UNet and the VAE pads
circularly, as the WebUI sets torch's padding_mode="circular" on them, so the picture tiles
seamlessly. Against diffusers with the same convs made circular; the plain picture afterwards
is the plain one (the UNet's capture keyed by the mode); families without it say so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers", reason="test-only reference (extra: reference)")
import torch  # noqa: E402
from sd_tiny import write_pipeline  # noqa: E402
from test_sd_pipeline import _assert_images_match, _same_draws  # noqa: E402

import gpucore  # noqa: E402
from diffusion import load_pipeline  # noqa: E402
from diffusion.cli.main import build_parser  # noqa: E402
from diffusion.infotext import format_infotext, parse_infotext  # noqa: E402
from diffusion.pipelines.contract import Capabilities  # noqa: E402
from diffusion.pipelines.request import GenerationRequest  # noqa: E402

SIZE = 32
SETTINGS: dict[str, Any] = dict(negative_prompt="blurry", steps=4, cfg_scale=7.5, seed=7,
                                width=SIZE, height=SIZE, sampler="DDIM")


def test_tiling_matches_diffusers_with_circular_convs(device: gpucore.Device, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_pipeline(tmp_path / "tiny-sd")
    ours = load_pipeline(folder, device=device)
    plain = ours.txt2img("a brick wall", **SETTINGS)
    tiled = ours.txt2img("a brick wall", tiling=True, **SETTINGS)
    again = ours.txt2img("a brick wall", **SETTINGS)
    assert np.array_equal(again.images[0], plain.images[0])  # not the tiled capture replayed
    moved = np.abs(tiled.images[0].astype(int) - plain.images[0]).mean()
    assert moved > 2, moved  # the edges' padding reaches the whole 32x32 picture
    reference = diffusers.StableDiffusionPipeline.from_pretrained(
        folder, safety_checker=None, requires_safety_checker=False)
    reference.set_progress_bar_config(disable=True)
    for model in (reference.unet, reference.vae):  # what the WebUI's Tiling does
        for layer in model.modules():
            if isinstance(layer, torch.nn.Conv2d):
                layer.padding_mode = "circular"
    _same_draws(monkeypatch, 7)
    expected = reference("a brick wall", negative_prompt="blurry", num_inference_steps=4,
                         guidance_scale=7.5, height=SIZE, width=SIZE, output_type="np").images
    _assert_images_match(tiled.images, expected)
    assert tiled.settings["tiling"] is True and "tiling" not in plain.settings
    text = format_infotext(tiled.settings)
    assert "RNG: CPU" not in text and ", Tiling: True" in text
    assert parse_infotext(text)["tiling"] is True


def test_the_doors_and_the_families_without_it() -> None:
    parser = build_parser()
    assert parser.parse_args(["txt2img", "--prompt", "a", "--tiling"]).tiling is True
    assert parser.parse_args(["txt2img", "--prompt", "a"]).tiling is False
    with pytest.raises(ValueError, match="tiling must be True or False"):
        GenerationRequest(tiling="yes")
    flux = Capabilities(family="flux-dev", latent_space="flux", models="FLUX.1 models")
    flux.refuse(GenerationRequest())
    with pytest.raises(ValueError, match=r"^tiling \(seamless pictures; SD 1.x/2.x and SDXL "
                                         r"have it\): not supported for FLUX.1 models yet; "
                                         r"leave it out$"):
        flux.refuse(GenerationRequest(tiling=True))
