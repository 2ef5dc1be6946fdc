"""JoyImage Edit Plus against diffusers' JoyImageEditPlusPipeline on a tiny random folder: two
pictures of other aspects, each read at its own bucket, the output at the last one's, CFG with
its rescale and diffusers' default negative prompt; each picture visibly matters. Both are
given the same small buckets (diffusers' own hold about a megapixel, too large for a CPU
adapter)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from joyimage_tiny import tiny_joyimage_plus  # noqa: F401 (a fixture)
from PIL import Image

import gpucore
from diffusion.pipelines.families import capabilities_of
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
