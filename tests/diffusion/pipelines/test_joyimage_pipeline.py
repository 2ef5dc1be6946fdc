"""JoyImage Edit against diffusers' JoyImageEditPipeline on a tiny random folder: an edit with
CFG and its rescale (the prompt and the picture visibly mattering), a picture of the prompt
alone, and the edit through the command line. diffusers is held to the output size asked for
(its own snaps every size to a megapixel bucket, too large for a CPU adapter) and to the VAE
posterior's mean (its own draws from the posterior without the generator)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from cli_support import cli_error, cli_ok, png_pixels
from joyimage_tiny import tiny_joyimage  # noqa: F401 (a fixture)
from PIL import Image

import gpucore
from diffusion.pipelines.families import capabilities_of
from diffusion.pipelines.flow.joyimage import BUCKETS, JoyImageEditPipeline, bucket

HEIGHT, WIDTH = 32, 48
PROMPT = "put the red circle on the blue square"
FLOAT_TOL = 5e-5  # max |ours - diffusers| in [0, 1], float32; measured 1.1e-5
PNG_TOL = 0.01  # mean, through the PNG's rounding


@pytest.fixture(autouse=True)
def posterior_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    monkeypatch.setattr(DiagonalGaussianDistribution, "sample",
                        lambda self, generator=None: self.mode())


def _picture(seed: int = 0) -> Any:
    """A picture of another aspect than the output's: scaled to cover it, then cropped."""
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((40, 72, 3)) * 255).astype(np.uint8))


def _diffusers(reference: Any, picture: Any, **settings: Any) -> np.ndarray:
    processor = reference.vae_image_processor
    processor.get_default_height_width = lambda image, height, width: (height, width)
    with torch.no_grad():
        images = reference(image=picture, prompt=PROMPT, height=HEIGHT, width=WIDTH,
                           num_inference_steps=2, generator=torch.Generator().manual_seed(7),
                           output_type="np", **settings).images
    return np.asarray(images)


def test_edit_equals_diffusers(first_device: gpucore.Device,
                               tiny_joyimage: tuple[Path, Any]) -> None:  # noqa: F811
    folder, reference = tiny_joyimage
    pipe = JoyImageEditPipeline.from_pretrained(folder, device=first_device)
    picture, settings = _picture(), {"guidance_scale": 4.0, "negative_prompt": "blurry"}
    ours = pipe(PROMPT, image=picture, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                seed=7, **settings)
    expected = _diffusers(reference, picture, **settings)
    assert np.abs(ours - expected).max() < FLOAT_TOL
    other = pipe("a green triangle under the sea", image=picture, height=HEIGHT, width=WIDTH,
                 num_inference_steps=2, seed=7, **settings)
    assert np.abs(other - ours).mean() > 20 * FLOAT_TOL
    flipped = pipe(PROMPT, image=picture.transpose(Image.FLIP_LEFT_RIGHT), height=HEIGHT,
                   width=WIDTH, num_inference_steps=2, seed=7, **settings)
    assert np.abs(flipped - ours).mean() > 20 * FLOAT_TOL


def test_prompt_alone_equals_diffusers(first_device: gpucore.Device,
                                       tiny_joyimage: tuple[Path, Any]) -> None:  # noqa: F811
    folder, reference = tiny_joyimage
    pipe = JoyImageEditPipeline.from_pretrained(folder, device=first_device)
    ours = pipe(PROMPT, height=HEIGHT, width=WIDTH, num_inference_steps=2, seed=7,
                guidance_scale=1.0)
    expected = _diffusers(reference, None, guidance_scale=1.0)
    assert np.abs(ours - expected).max() < FLOAT_TOL


@pytest.mark.nodevice
def test_bucket_is_diffusers() -> None:
    from diffusers.pipelines.joyimage.image_processor import BUCKETS as THEIRS
    from diffusers.pipelines.joyimage.image_processor import find_best_bucket

    assert BUCKETS == tuple(tuple(hw) for hw in THEIRS[1024])
    for width, height in ((640, 480), (480, 640), (1000, 1000), (2000, 300), (77, 1900)):
        h, w = find_best_bucket(height, width, 1024)
        assert bucket(width, height) == (w, h)


def test_edit_from_the_cli(first_device: gpucore.Device, tiny_joyimage: tuple[Path, Any],  # noqa: F811
                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """img2img with the init image as the picture to edit: diffusers' picture (the PNG's
    rounding) from the family's own sampler; a strength, a mask, a side off 16 and a LoRA
    the LoRA folder lacks refused in one line."""
    folder, reference = tiny_joyimage
    capabilities = capabilities_of(folder)
    assert capabilities is not None and capabilities.family == "joyimage-edit"
    picture = _picture().resize((WIDTH, HEIGHT))
    picture.save(tmp_path / "in.png")
    common = ("--model", str(folder), "--prompt", PROMPT, "--width", str(WIDTH), "--height",
              str(HEIGHT), "--steps", "2", "--cfg-scale", "4", "--rng", "torch", "--seed", "7",
              "--dtype", "float32", "--init-image", str(tmp_path / "in.png"))
    out, _ = cli_ok(capsys, "img2img", *common, "--out", str(tmp_path / "a.png"))
    expected = _diffusers(reference, picture, guidance_scale=4.0)[0]
    assert np.abs(png_pixels(out) - expected).mean() < PNG_TOL
    assert "strength" in cli_error(capsys, "img2img", *common, "--strength", "0.5",
                                   "--out", str(tmp_path / "x.png"))
    Image.new("L", picture.size, 255).save(tmp_path / "mask.png")
    assert "mask" in cli_error(capsys, "inpaint", *common, "--mask", str(tmp_path / "mask.png"),
                               "--out", str(tmp_path / "x.png"))
    assert "multiple of 16" in cli_error(capsys, "img2img", *common[:-2], "--init-image",
                                         str(tmp_path / "in.png"), "--width", "40", "--out",
                                         str(tmp_path / "x.png"))
    assert "style" in cli_error(capsys, "img2img", *common, "--prompt", "<lora:style:1> a cat",
                                "--lora-dir", str(tmp_path), "--out", str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()
