"""Qwen-Image-Edit (and Edit Plus) with a reference picture that has transparent pixels,
against diffusers' pipelines on a tiny random folder: the picture resized with its alpha
(Pillow premultiplies it) and composited over white, as transformers' Qwen2VLImageProcessor
(convert_to_rgb) does after diffusers' resize; the prompt equal to diffusers' encode_prompt,
and the VAE given that same opaque picture (diffusers' VaeImageProcessor passes RGBA on as
four channels, which its VAE cannot read)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
from PIL import Image
from qwenedit_tiny import read_at_area, tiny_qwenimage_edit_pipeline
from support import assert_close

import gpucore
from diffusion.pipelines.flow.qwen_image_edit import QwenImageEditPipeline, reference_dimensions
from diffusion.pipelines.flow.qwen_image_edit_plus import QwenImageEditPlusPipeline

AREA = 64 * 96  # the reference's pixels (diffusers' 1024 x 1024 would be slow here)
TOL = 2e-4  # of the states' size (~1); float32 throughout, measured 8.6e-5 (Plus 3.3e-5)
PROMPT = "make the red circle blue and the square green, " * 4


@pytest.fixture(scope="module")
def tiny_edit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("tiny-qwen-edit-alpha")
    pipe = tiny_qwenimage_edit_pipeline(root)
    with read_at_area(pipe, AREA):
        yield root / "qwen-edit", pipe


def _rgba() -> Image.Image:
    """Random colours and alpha; a band fully transparent and one half so over magenta."""
    rng = np.random.default_rng(11)
    pixels = rng.integers(0, 256, (60, 100, 4), dtype=np.uint8)
    pixels[:20, :, :3], pixels[:20, :, 3] = (255, 0, 255), 0
    pixels[20:35, :, :3], pixels[20:35, :, 3] = (255, 0, 255), rng.integers(0, 128, (15, 100))
    return Image.fromarray(pixels, "RGBA")


def _over_white(picture: Image.Image) -> np.ndarray:
    from transformers.image_transforms import convert_to_rgb

    return convert_to_rgb(picture, return_numpy=True)


def test_transparent_reference_equals_diffusers(first_device: gpucore.Device,
                                                tiny_edit: tuple[Path, Any]) -> None:
    """Edit: one reference; Edit Plus: it read at the condition area, encoded at the
    reference area. The hidden magenta visibly changes diffusers' prompt (the premise)."""
    import diffusers

    folder, reference = tiny_edit
    picture = _rgba()
    resized = reference.image_processor.resize(picture, 64, 96)
    expected = reference.encode_prompt(prompt=[PROMPT], image=resized, device="cpu")[0]
    shown = reference.encode_prompt(prompt=[PROMPT], image=resized.convert("RGB"),
                                    device="cpu")[0]
    difference = (shown - expected).abs().mean().item()  # measured 0.08 of a mean 0.82
    assert difference > 100 * TOL * expected.abs().mean().item()
    ours = QwenImageEditPipeline.from_pretrained(folder, device=first_device)
    ours.reference_area = AREA
    read, encoded = ours.pictures(picture)
    assert encoded[0][1:] == (96, 64)
    np.testing.assert_array_equal(np.asarray(encoded[0][0]), _over_white(resized))
    got = ours.encode_edit_prompt([PROMPT], read)[0].numpy()
    assert_close(got, expected.detach().numpy(), tol=TOL)

    plus = QwenImageEditPlusPipeline.from_pretrained(folder, device=first_device)
    plus.reference_area, plus.condition_area = AREA, 32 * 64
    read, encoded = plus.pictures([picture])
    assert reference_dimensions(100, 60, plus.condition_area) == (64, 32)
    condition = reference.image_processor.resize(picture, 32, 64)
    np.testing.assert_array_equal(np.asarray(read[0]), _over_white(condition))
    assert encoded[0][1:] == reference_dimensions(100, 60, AREA) == (96, 64)
    np.testing.assert_array_equal(np.asarray(encoded[0][0]), _over_white(resized))
    expected = diffusers.QwenImageEditPlusPipeline(**reference.components).encode_prompt(
        prompt=[PROMPT], image=[condition], device="cpu")[0]
    got = plus.encode_edit_prompt([PROMPT], read)[0].numpy()
    assert_close(got, expected.detach().numpy(), tol=TOL)


def test_cli_keeps_the_transparency(tmp_path: Path) -> None:
    """The CLI's --init-image and --reference keep an RGBA PNG's alpha (as the server's
    decoded pictures do), so the edit model composites it over white; an opaque picture
    stays RGB."""
    from diffusion.cli.generate import build_request
    from diffusion.cli.main import build_parser

    _rgba().save(tmp_path / "see-through.png")
    _rgba().convert("RGB").save(tmp_path / "opaque.png")
    args = build_parser().parse_args([
        "img2img", "--prompt", "a", "--init-image", str(tmp_path / "see-through.png"),
        "--reference", str(tmp_path / "opaque.png")])
    args.steps, args.cfg_scale, args.sampler = 20, 4.0, "Euler"
    request = build_request(args)
    assert request.init_image.mode == "RGBA" and request.references[0].mode == "RGB"
    np.testing.assert_array_equal(np.asarray(request.init_image), np.asarray(_rgba()))
