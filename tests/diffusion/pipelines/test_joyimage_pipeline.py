"""JoyImage Edit against diffusers' JoyImageEditPipeline on a tiny random folder: an edit with
CFG and its rescale (the prompt and the picture visibly mattering) and a picture of the prompt
alone. diffusers is held to the output size asked for (its own snaps every size to a
megapixel bucket, too large for a CPU adapter) and to the VAE posterior's mean (its own draws
from the posterior without the generator)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from joyimage_tiny import tiny_joyimage  # noqa: F401 (a fixture)
from PIL import Image

import gpucore
from diffusion.pipelines.flow.joyimage import JoyImageEditPipeline, bucket

HEIGHT, WIDTH = 32, 48
PROMPT = "put the red circle on the blue square"
FLOAT_TOL = 5e-5  # max |ours - diffusers| in [0, 1], float32; measured 1.1e-5


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
    from diffusers.pipelines.joyimage.image_processor import find_best_bucket

    for width, height in ((640, 480), (480, 640), (1000, 1000), (2000, 300), (77, 1900)):
        h, w = find_best_bucket(height, width, 1024)
        assert bucket(width, height) == (w, h)
