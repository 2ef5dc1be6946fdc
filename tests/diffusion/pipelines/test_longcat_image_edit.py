"""LongCat-Image-Edit: LongCatImageEditPipeline on gpustd against diffusers' (tiny, random,
float32, a small area in place of its megapixel; its text encoder given `mm_token_type_ids`,
the multimodal positions transformers 4 made and transformers 5 builds only with them), the
picture and the instruction visibly mattering; through the command line as img2img (the init
image the picture to edit), and what it refuses in one line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_pixels
from PIL import Image

import gpucore
from diffusion.pipelines.families import capabilities_of
from diffusion.pipelines.flow import longcat_image_edit as edit_module
from diffusion.pipelines.flow.longcat_image_edit import LongCatImageEditPipeline, edit_dimensions

AREA = 48 * 80  # the edited picture's pixels (diffusers' 1024 x 1024 would be slow here)
WIDTH, HEIGHT = edit_dimensions(100, 60, AREA)  # the picture's 5:3 at AREA: 80 x 48
PICTURE = Image.fromarray(np.random.default_rng(1).integers(0, 255, (60, 100, 3), np.uint8))
OTHER = Image.fromarray(np.random.default_rng(2).integers(0, 255, (60, 100, 3), np.uint8))
RED = "make the sky 'red'"


@pytest.fixture(scope="module")
def tiny_edit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """(the folder, diffusers' LongCatImageEditPipeline at AREA, its text encoder given the
    image tokens' types)."""
    from diffusers.pipelines.longcat_image import pipeline_longcat_image_edit as module
    from longcat_image_tiny import tiny_longcat_edit_pipeline

    root = tmp_path_factory.mktemp("tiny-longcat-edit")
    reference = tiny_longcat_edit_pipeline(root)
    dimensions = module.calculate_dimensions
    patch = pytest.MonkeyPatch()
    patch.setattr(module, "calculate_dimensions", lambda _, ratio: dimensions(AREA, ratio))
    encoder, image_token = reference.text_encoder, reference.text_encoder.config.image_token_id
    forward = encoder.forward

    def with_types(input_ids: Any = None, **kwargs: Any) -> Any:
        return forward(input_ids=input_ids, mm_token_type_ids=(input_ids == image_token).int(),
                       **kwargs)

    patch.setattr(encoder, "forward", with_types)
    yield root / "longcat-edit", reference
    patch.undo()


def _diffusers(reference: Any, prompt: str, picture: Any = PICTURE, **settings: Any
               ) -> np.ndarray:
    with torch.no_grad():
        return np.asarray(reference(picture, prompt, num_inference_steps=2,
                                    generator=torch.Generator().manual_seed(7),
                                    output_type="np", **settings).images[0])


def test_edit_pipeline_is_diffusers(first_device: gpucore.Device,
                                    tiny_edit: tuple[Path, Any]) -> None:
    """The edited picture with CFG against a negative prompt; the picture and the
    instruction visibly matter."""
    folder, reference = tiny_edit
    pipe = LongCatImageEditPipeline.from_pretrained(folder, device=first_device)
    pipe.area = AREA

    def ours(prompt: str, picture: Any = PICTURE, steps: int = 2, **settings: Any
             ) -> np.ndarray:
        return pipe(prompt, image=picture, num_inference_steps=steps, seed=7, **settings)[0]

    got = ours(RED, negative_prompt="blurry")
    assert got.shape == (HEIGHT, WIDTH, 3)
    # measured on lavapipe: 6.4e-6 mean, 3.1e-5 max (the vision tower's resize and passes)
    np.testing.assert_allclose(got, _diffusers(reference, RED, negative_prompt="blurry"),
                               atol=2e-4)
    # the instruction and the picture matter (one step without guidance: one pass each)
    plain = ours(RED, steps=1, guidance_scale=1.0)
    assert np.abs(ours("turn it into a cat", steps=1, guidance_scale=1.0) - plain).mean() > 0.01
    assert np.abs(ours(RED, OTHER, steps=1, guidance_scale=1.0) - plain).mean() > 0.01


def test_edit_from_the_cli(first_device: gpucore.Device, tiny_edit: tuple[Path, Any],
                           tmp_path: Path, capsys: pytest.CaptureFixture[str],
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """img2img with the init image as the picture: diffusers' picture at its size with
    `--sampler diffusers --rng torch`; txt2img, a mask, a strength and the hires fix
    refused in one line."""
    folder, reference = tiny_edit
    monkeypatch.setattr(edit_module, "EDIT_AREA", AREA)
    capabilities = capabilities_of(folder)
    assert capabilities is not None and capabilities.family == "longcat-image-edit"
    PICTURE.save(tmp_path / "in.png")
    common = ("--model", str(folder), "--prompt", RED, "--width", str(WIDTH), "--height",
              str(HEIGHT), "--steps", "2", "--sampler", "diffusers", "--rng", "torch",
              "--seed", "7", "--dtype", "float32")
    out, _ = cli_ok(capsys, "img2img", *common, "--init-image", str(tmp_path / "in.png"),
                    "--out", str(tmp_path / "a.png"))
    expected = _diffusers(reference, RED, guidance_scale=4.5)
    assert np.abs(png_pixels(out) - expected).mean() < 0.01
    assert "init image" in cli_error(capsys, "txt2img", *common,
                                     "--out", str(tmp_path / "x.png"))
    assert "strength" in cli_error(capsys, "img2img", *common, "--init-image",
                                   str(tmp_path / "in.png"), "--strength", "0.5",
                                   "--out", str(tmp_path / "x.png"))
    Image.new("L", PICTURE.size, 255).save(tmp_path / "mask.png")
    assert "mask" in cli_error(capsys, "inpaint", *common, "--init-image",
                               str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"),
                               "--out", str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()
