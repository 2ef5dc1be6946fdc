"""Bria FIBO Edit: BriaFiboEditPipeline on gpustd against diffusers' (tiny, random, float32):
one reference and two (each its own size and rotary plane), CFG; the picture visibly matters;
its sizes as diffusers' helpers give them; what it refuses in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from diffusers.pipelines.bria_fibo import pipeline_bria_fibo_edit as reference_module
from PIL import Image

import gpucore
from diffusion.pipelines.flow.bria_fibo_edit import (
    PREFERRED_SIZES,
    BriaFiboEditPipeline,
    edit_size,
    reference_size,
)

HEIGHT, WIDTH = 48, 80
EDIT = json.dumps({"edit_instruction": "make the circle green"})


@pytest.fixture(scope="module")
def tiny_edit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from bria_fibo_tiny import tiny_fibo_edit_pipeline

    root = tmp_path_factory.mktemp("tiny-fibo-edit")
    return root / "fibo-edit", tiny_fibo_edit_pipeline(root)


def _picture(seed: int, width: int, height: int) -> Image.Image:
    """Smooth random colour waves: shapes for the tiny VAE to encode, not only noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    waves = [np.sin(6 * (rng.uniform(-1, 1) * x + rng.uniform(-1, 1) * y) + rng.uniform(0, 6))
             for _ in range(3)]
    return Image.fromarray((127.5 + 127 * np.stack(waves, -1)).astype(np.uint8))


def _diffusers(reference: Any, image: Any, **settings: Any) -> np.ndarray:
    with torch.no_grad():
        return np.asarray(reference(EDIT, image=image, height=HEIGHT, width=WIDTH,
                                    num_inference_steps=2, output_type="np",
                                    generator=torch.Generator().manual_seed(7),
                                    **settings).images[0])


def test_edit_is_diffusers(first_device: gpucore.Device, tiny_edit: tuple[Path, Any]) -> None:
    """One reference at CFG 5 and two at CFG 1 (the second at another size, its own plane);
    another picture visibly changes the edit."""
    folder, reference = tiny_edit
    pipe = BriaFiboEditPipeline.from_pretrained(folder, device=first_device)
    owl, forest = _picture(1, 72, 40), _picture(2, 40, 56)

    def ours(image: Any, **settings: Any) -> np.ndarray:
        return pipe(EDIT, image=image, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                    seed=7, **settings)[0]

    one = ours(owl)
    # measured on lavapipe: 3.5e-6 max (two references: 9.5e-7)
    np.testing.assert_allclose(one, _diffusers(reference, owl), atol=2e-5)
    two = ours([owl, forest], guidance_scale=1.0)
    np.testing.assert_allclose(two, _diffusers(reference, [owl, forest], guidance_scale=1.0),
                               atol=2e-5)
    assert np.abs(ours(forest) - one).mean() > 0.01  # the picture matters (measured 0.05)


@pytest.mark.nodevice
def test_sizes_are_diffusers() -> None:
    """The references' VAE sizes and the output's preferred size, as diffusers' helpers."""
    for width, height in ((72, 40), (40, 56), (3000, 2000), (1024, 1024), (700, 1900), (8, 8)):
        assert reference_size(width, height) == reference_module._vae_safe_dims(width, height)
        expected = min(reference_module.PREFERRED_RESOLUTION[1024 * 1024],
                       key=lambda size: abs(size[0] / size[1] - np.divide(
                           *reference_module._vae_safe_dims(width, height))))
        assert edit_size(width, height) == expected
    assert set(PREFERRED_SIZES) == set(reference_module.PREFERRED_RESOLUTION[1024 * 1024])


def test_edit_refusals(first_device: gpucore.Device, tiny_edit: tuple[Path, Any]) -> None:
    folder, _ = tiny_edit
    pipe = BriaFiboEditPipeline.from_pretrained(folder, device=first_device)
    picture = _picture(1, 72, 40)
    with pytest.raises(ValueError, match="edit_instruction"):
        pipe("make it green", image=picture, height=HEIGHT, width=WIDTH)
    with pytest.raises(ValueError, match="give it as the image"):
        pipe(EDIT, height=HEIGHT, width=WIDTH)
    with pytest.raises(ValueError, match="mask is not supported"):
        pipe(EDIT, image=picture, mask=picture, height=HEIGHT, width=WIDTH)


def test_edit_from_the_cli(first_device: gpucore.Device, tiny_edit: tuple[Path, Any],
                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """img2img with the picture to edit as the init image (at the request's size: the WebUI
    resizes init images to it first): diffusers' picture at CFG 1 within a PNG's rounding;
    txt2img and a strength refused in one line."""
    from cli_support import cli_error, cli_ok, png_pixels

    from diffusion.pipelines.families import capabilities_of

    folder, reference = tiny_edit
    capabilities = capabilities_of(folder)
    assert capabilities is not None and capabilities.family == "bria-fibo-edit"
    _picture(1, WIDTH, HEIGHT).save(tmp_path / "owl.png")
    common = ("--model", str(folder), "--width", str(WIDTH), "--height", str(HEIGHT),
              "--steps", "2", "--rng", "torch", "--seed", "7", "--dtype", "float32",
              "--prompt", EDIT, "--cfg-scale", "1")
    out, _ = cli_ok(capsys, "img2img", *common, "--init-image", str(tmp_path / "owl.png"),
                    "--out", str(tmp_path / "a.png"))
    owl = Image.open(tmp_path / "owl.png")
    expected = _diffusers(reference, owl, guidance_scale=1.0)
    assert np.abs(png_pixels(out) - expected).mean() < 0.01  # a PNG's rounding
    assert "init image" in cli_error(capsys, "txt2img", *common,
                                     "--out", str(tmp_path / "x.png"))
    assert "strength" in cli_error(capsys, "img2img", *common, "--init-image",
                                   str(tmp_path / "owl.png"), "--strength", "0.5",
                                   "--out", str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()
