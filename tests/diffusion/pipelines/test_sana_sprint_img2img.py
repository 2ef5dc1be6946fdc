"""Sana Sprint's img2img against diffusers' SanaSprintImg2ImgPipeline on the tiny random Sprint
folder (PyTorch CPU float32): the schedule's tail that the strength keeps, from the DC-AE's
latents of the picture turned to its first angle with the noise; through the pipeline and the
command line; a mask refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_pixels

import gpucore

SIZE = {"height": 32, "width": 64}


def _picture(low: int) -> Any:
    from PIL import Image

    rng = np.random.default_rng(low)
    return Image.fromarray(rng.integers(low, low + 60, (32, 64, 3), np.uint8))


def _diffusers(reference: Any, picture: Any, strength: float) -> np.ndarray:
    import diffusers

    img2img = diffusers.SanaSprintImg2ImgPipeline(**reference.components)
    with torch.no_grad():
        return img2img("a red circle", image=picture, strength=strength, guidance_scale=4.5,
                       num_inference_steps=2, max_sequence_length=40,
                       generator=torch.Generator().manual_seed(7), output_type="np",
                       use_resolution_binning=False, **SIZE).images[0]


def test_sana_sprint_img2img_is_diffusers(first_device: gpucore.Device,
                                          tiny_sana_sprint: tuple[Path, Any]) -> None:
    """Strength 0.5 of two steps: the last one from the angle 1.3; the picture matters.
    Strength 0 (diffusers keeps a step for any strength above 0) is refused in one line."""
    from diffusion.pipelines.flow.sana import SanaPipeline

    folder, reference = tiny_sana_sprint
    dark = _picture(20)
    expected = _diffusers(reference, dark, 0.5)
    ours = SanaPipeline.from_pretrained(folder, device=first_device)
    settings: dict[str, Any] = dict(num_inference_steps=2, guidance_scale=4.5,
                                    max_sequence_length=40, seed=7, strength=0.5, **SIZE)
    got = ours("a red circle", image=dark, **settings)[0]
    assert np.abs(got - expected).max() < 1e-5  # 1.2e-6 measured
    light = ours("a red circle", image=_picture(180), **settings)[0]
    assert np.abs(light - got).mean() > 0.01
    with pytest.raises(ValueError, match="leaves no step") as refused:
        ours("a red circle", image=dark, **{**settings, "strength": 0.0})
    assert "\n" not in str(refused.value)


def test_sana_sprint_img2img_from_the_cli(first_device: gpucore.Device,
                                          tiny_sana_sprint: tuple[Path, Any], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`img2img --strength 0.5` on a Sprint folder: diffusers' picture (its own sampler, the
    default); a mask refused in one line."""
    folder, reference = tiny_sana_sprint
    init = tmp_path / "init.png"
    _picture(20).save(init)
    common = ("img2img", "--model", str(folder), "--prompt", "a red circle",
              "--init-image", str(init), "--width", "64", "--height", "32", "--seed", "7",
              "--dtype", "float32", "--rng", "torch", "--distilled-cfg-scale", "4.5",
              "--strength", "0.5")
    out, _ = cli_ok(capsys, *common, "--out", str(tmp_path / "a.png"))
    expected = _diffusers(reference, _picture(20), 0.5)
    assert np.abs(png_pixels(out) - expected).mean() < 0.002  # the PNG's rounding
    mask = tmp_path / "mask.png"
    from PIL import Image

    Image.fromarray(np.full((32, 64), 255, np.uint8)).save(mask)
    error = cli_error(capsys, "inpaint", *common[1:], "--mask", str(mask),
                      "--out", str(tmp_path / "b.png"))
    assert "Sana Sprint has no inpainting" in error
