"""NucleusMoE-Image: NucleusMoEImagePipeline on gpustd against diffusers' (tiny, random,
float32), with its renormalised CFG, the prompt and the negative prompt visibly mattering;
its prompt tokens against diffusers' processor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch

import gpucore
from diffusion.models.nucleusmoe_prompt import tokenize
from diffusion.pipelines.flow.nucleusmoe_image import NucleusMoEImagePipeline
from diffusion.text.llm_tokenizer import LLMTokenizer

HEIGHT, WIDTH = 24, 40  # the tiny VAE's 4x: 3 x 5 patches of 2 x 2 latents
RED = "a red circle on a blue square"
HORSE = "an astronaut riding a horse"


def _diffusers(reference: Any, prompt: str, steps: int = 2, **settings: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=steps,
                           generator=torch.Generator().manual_seed(7), output_type="np",
                           **settings).images
    return np.asarray(images[0])


@pytest.mark.nodevice
def test_prompt_tokens_are_diffusers(tiny_nucleus: tuple[Path, Any]) -> None:
    """The ids and mask the text encoder reads (templated, padded to a multiple of 8, cut at
    max_sequence_length) as NucleusMoEImagePipeline.encode_prompt's processor call makes
    them."""
    folder, reference = tiny_nucleus
    tokenizer = LLMTokenizer(folder / "processor")
    for prompt, length in ((RED, 1024), ("word " * 300, 64)):
        expected = reference.processor(text=[reference._format_prompt(prompt)],
                                       padding="longest", pad_to_multiple_of=8,
                                       max_length=length, truncation=True, return_tensors="np")
        ids, mask = tokenize(tokenizer, prompt, length)
        np.testing.assert_array_equal(ids[mask], expected.input_ids[expected.attention_mask == 1])
        np.testing.assert_array_equal(mask, expected.attention_mask.astype(bool))
        assert ids.shape[1] % 8 == 0
    assert not mask.all() or ids.shape[1] == 64


def test_pipeline_is_diffusers(first_device: gpucore.Device,
                               tiny_nucleus: tuple[Path, Any]) -> None:
    """The picture at guidance 4 (diffusers' default) with a negative prompt; the prompt
    visibly matters (the CLI's test shows the guidance does)."""
    folder, reference = tiny_nucleus
    pipe = NucleusMoEImagePipeline.from_pretrained(folder, device=first_device)

    def ours(prompt: str) -> np.ndarray:
        return pipe(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=2, seed=7,
                    negative_prompt="blurry")[0]

    guided = ours(RED)
    expected = _diffusers(reference, RED, negative_prompt="blurry")
    # measured on lavapipe: 3.6e-7 mean, 3.9e-6 max
    np.testing.assert_allclose(guided, expected, atol=2e-5)
    assert np.abs(ours(HORSE) - guided).mean() > 2e-3
