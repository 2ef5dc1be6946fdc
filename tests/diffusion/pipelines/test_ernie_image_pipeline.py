"""ERNIE-Image: ErnieImagePipeline on gpustd against diffusers' (tiny, random, float32; the
prompt enhancer off), with CFG against a negative prompt and without, the prompt and the
negative prompt visibly mattering; a batch of two prompts; what it refuses in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch

import gpucore
from diffusion.loaders.ernie_image import ernie_image_family
from diffusion.pipelines.flow.ernie_image import ErnieImagePipeline

HEIGHT, WIDTH = 24, 40  # 6 x 10 latents of the tiny VAE's 2x and 2x2 patches
RED = "a red circle on a blue square"
HORSE = "an astronaut riding a horse"


def _diffusers(reference: Any, prompt: Any, steps: int = 2, **settings: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=steps,
                           generator=torch.Generator().manual_seed(7), output_type="np",
                           use_pe=False, **settings).images
    return np.asarray(images)


def test_pipeline_is_diffusers(first_device: gpucore.Device,
                               tiny_ernie: tuple[Path, Any]) -> None:
    """The picture at guidance 4 (diffusers' default) against a negative prompt, at 1 (no
    negative pass), and a batch of two prompts; the prompt and the negative prompt matter."""
    folder, reference = tiny_ernie
    assert ernie_image_family(folder) == "ernie-image"
    pipe = ErnieImagePipeline.from_pretrained(folder, device=first_device)

    def ours(prompt: Any, **settings: Any) -> np.ndarray:
        return pipe(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=2, seed=7,
                    **settings)

    guided = ours(RED, negative_prompt="blurry")
    expected = _diffusers(reference, RED, negative_prompt="blurry")
    # measured on lavapipe: 6.2e-7 mean, 4.4e-6 max
    np.testing.assert_allclose(guided, expected, atol=2e-5)
    plain = ours(RED, guidance_scale=1.0)
    np.testing.assert_allclose(plain, _diffusers(reference, RED, guidance_scale=1.0),
                               atol=2e-5)
    assert np.abs(plain - guided).mean() > 0.01  # the negative pass matters
    both = ours([RED, HORSE], guidance_scale=1.0)
    # diffusers pads the shorter prompt and masks it: the same pictures as one at a time
    np.testing.assert_allclose(both, _diffusers(reference, [RED, HORSE], guidance_scale=1.0),
                               atol=2e-5)
    assert np.abs(both[1] - both[0]).mean() > 0.01  # the prompt matters
    empty = ours("", guidance_scale=1.0)  # the BOS alone
    np.testing.assert_allclose(empty, _diffusers(reference, "", guidance_scale=1.0),
                               atol=2e-5)


def test_refusals(first_device: gpucore.Device, tiny_ernie: tuple[Path, Any]) -> None:
    folder, _ = tiny_ernie
    pipe = ErnieImagePipeline.from_pretrained(folder, device=first_device)
    with pytest.raises(ValueError, match="prompt enhancer"):
        pipe(RED, height=HEIGHT, width=WIDTH, use_pe=True)
    with pytest.raises(ValueError, match="multiples of 4"):
        pipe(RED, height=HEIGHT + 2, width=WIDTH)
    with pytest.raises(ValueError, match="3 negative prompts for 2 prompts"):
        pipe([RED, HORSE], negative_prompt=["a", "b", "c"], height=HEIGHT, width=WIDTH)


def test_pipeline_float16(f16_device: gpucore.Device, tiny_ernie: tuple[Path, Any]) -> None:
    """float16 weights throughout (the text encoder's stream float32, as ours keeps it)
    against diffusers' float32 picture."""
    folder, reference = tiny_ernie
    pipe = ErnieImagePipeline.from_pretrained(folder, dtype=np.float16, device=f16_device)
    got = pipe(RED, negative_prompt="blurry", height=HEIGHT, width=WIDTH,
               num_inference_steps=2, seed=7)
    error = np.abs(got - _diffusers(reference, RED, negative_prompt="blurry"))
    # measured on lavapipe: 1.5e-3 mean, 9.2e-3 max (float16 rounding through every part)
    assert error.mean() < 5e-3 and error.max() < 3e-2
