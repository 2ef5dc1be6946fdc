"""JoyImage Edit Plus against diffusers' JoyImageEditPlusPipeline on a tiny random folder: two
pictures of other aspects, each read at its own bucket, the output at the last one's, CFG with
its rescale and diffusers' default negative prompt; each picture visibly matters. Both are
given the same small buckets (diffusers' own hold about a megapixel, too large for a CPU
adapter). Through the command line, the init image and a reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from cli_support import cli_ok, png_pixels
from joyimage_tiny import tiny_joyimage_plus  # noqa: F401 (a fixture)
from PIL import Image

import gpucore
from diffusion.pipelines.families import capabilities_of
from diffusion.pipelines.flow import joyimage
from diffusion.pipelines.flow.joyimage import JoyImageEditPipeline

PROMPT = "put the cat from the first picture on the sofa of the second"
FLOAT_TOL = 5e-5  # max |ours - diffusers| in [0, 1], float32; measured 1.3e-5
# (height, width), as diffusers' BUCKETS
SMALL_BUCKETS = ((32, 64), (32, 48), (32, 32), (48, 32), (64, 32))


def _pictures() -> list[Any]:
    rng = np.random.default_rng(3)
    return [Image.fromarray((rng.random(shape) * 255).astype(np.uint8))
            for shape in ((40, 90, 3), (70, 44, 3))]


def _diffusers(reference: Any, pictures: list[Any]) -> np.ndarray:
    from diffusers.pipelines.joyimage import image_processor

    with pytest.MonkeyPatch.context() as patch, torch.no_grad():
        patch.setitem(image_processor.BUCKETS, 1024, list(SMALL_BUCKETS))
        images = reference(images=pictures, prompt=PROMPT, num_inference_steps=2,
                           guidance_scale=4.0, generator=torch.Generator().manual_seed(7),
                           output_type="np").images
    return np.asarray(images)


def test_plus_equals_diffusers(first_device: gpucore.Device,
                               tiny_joyimage_plus: tuple[Path, Any]) -> None:  # noqa: F811
    folder, reference = tiny_joyimage_plus
    capabilities = capabilities_of(folder)
    assert capabilities is not None and capabilities.family == "joyimage-edit-plus"
    assert capabilities.references is None
    pipe = JoyImageEditPipeline.from_pretrained(folder, device=first_device)
    assert pipe.plus
    pipe.buckets = SMALL_BUCKETS
    pictures = _pictures()
    ours = pipe(PROMPT, image=pictures, num_inference_steps=2, seed=7, guidance_scale=4.0)
    assert ours.shape == (1, 48, 32, 3)  # the last picture's bucket
    expected = _diffusers(reference, pictures)
    assert np.abs(ours - expected).max() < FLOAT_TOL
    flipped = pipe(PROMPT, image=[pictures[0].transpose(Image.FLIP_LEFT_RIGHT), pictures[1]],
                   num_inference_steps=2, seed=7, guidance_scale=4.0)
    assert np.abs(flipped - ours).mean() > 20 * FLOAT_TOL  # the first picture matters
    flipped = pipe(PROMPT, image=[pictures[0], pictures[1].transpose(Image.FLIP_LEFT_RIGHT)],
                   num_inference_steps=2, seed=7, guidance_scale=4.0)
    assert np.abs(flipped - ours).mean() > 20 * FLOAT_TOL  # the second too


def test_plus_from_the_cli(first_device: gpucore.Device,
                           tiny_joyimage_plus: tuple[Path, Any],  # noqa: F811
                           tmp_path: Path, capsys: pytest.CaptureFixture[str],
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """img2img's init image and --reference are the pictures, in order: diffusers' picture
    (the PNG's rounding) at the size asked (the init image already that size, as img2img
    fits it)."""
    from diffusers.pipelines.joyimage import image_processor

    folder, reference = tiny_joyimage_plus
    monkeypatch.setattr(joyimage, "BUCKETS", SMALL_BUCKETS)
    first, second = _pictures()
    first = first.resize((32, 48))
    first.save(tmp_path / "a.png")
    second.save(tmp_path / "b.png")
    out, _ = cli_ok(capsys, "img2img", "--model", str(folder), "--prompt", PROMPT,
                    "--init-image", str(tmp_path / "a.png"), "--reference",
                    str(tmp_path / "b.png"), "--width", "32", "--height", "48", "--steps", "2",
                    "--cfg-scale", "4", "--rng", "torch", "--seed", "7", "--dtype", "float32",
                    "--out", str(tmp_path / "out.png"))
    with torch.no_grad():
        monkeypatch.setitem(image_processor.BUCKETS, 1024, list(SMALL_BUCKETS))
        expected = reference(images=[first, second], prompt=PROMPT, height=48, width=32,
                             num_inference_steps=2, guidance_scale=4.0,
                             generator=torch.Generator().manual_seed(7),
                             output_type="np").images[0]
    assert np.abs(png_pixels(out) - expected).mean() < 0.01
