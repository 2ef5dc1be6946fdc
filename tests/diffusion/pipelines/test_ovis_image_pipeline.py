"""Ovis-Image: OvisImagePipeline on gpustd against diffusers' (tiny, random, float32), with CFG,
the prompt and the negative prompt visibly mattering; its prompt tokens against diffusers'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch

import gpucore
from diffusion.models.ovis_image_prompt import prompt_tokens
from diffusion.pipelines.flow.ovis_image import OvisImagePipeline
from diffusion.text.llm_tokenizer import LLMTokenizer

HEIGHT, WIDTH = 24, 40  # the tiny VAE's 2x: 6 x 10 patches of 2 x 2 latents
RED = "a red circle on a blue square"
HORSE = "an astronaut riding a horse with OVIS written on it"


def _diffusers(reference: Any, prompt: str, steps: int = 2, **settings: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=steps,
                           generator=torch.Generator().manual_seed(7), output_type="np",
                           **settings).images
    return np.asarray(images[0])


@pytest.mark.nodevice
def test_prompt_tokens_are_diffusers(tiny_ovis: tuple[Path, Any]) -> None:
    """The ids and mask the text encoder reads (templated, cut or padded to 284) as
    OvisImagePipeline._get_ovis_prompt_embeds makes them."""
    folder, reference = tiny_ovis
    prompts = [RED, "word " * 400]
    messages = reference._get_messages(prompts)
    expected = reference.tokenizer(messages, padding="max_length", truncation=True,
                                   max_length=284, return_tensors="np",
                                   add_special_tokens=False)
    ids, mask = prompt_tokens(LLMTokenizer(folder / "tokenizer"), prompts)
    np.testing.assert_array_equal(ids, expected.input_ids)
    np.testing.assert_array_equal(mask, expected.attention_mask)
    assert not mask[0].all() and mask[1].all()  # padded; cut


def test_pipeline_is_diffusers(first_device: gpucore.Device,
                               tiny_ovis: tuple[Path, Any]) -> None:
    """The picture at guidance 5 (diffusers' default) with a negative prompt, and without
    guidance; the guidance and the prompt visibly matter."""
    folder, reference = tiny_ovis
    pipe = OvisImagePipeline.from_pretrained(folder, device=first_device)

    def ours(prompt: str, **settings: Any) -> np.ndarray:
        return pipe(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=2, seed=7,
                    **settings)[0]

    guided = ours(RED, negative_prompt="blurry")
    # measured on lavapipe: 5.0e-7 mean, 3.0e-6 max
    np.testing.assert_allclose(guided, _diffusers(reference, RED, negative_prompt="blurry"),
                               atol=2e-5)
    plain = ours(RED, guidance_scale=1.0)
    np.testing.assert_allclose(plain, _diffusers(reference, RED, guidance_scale=1.0),
                               atol=2e-5)
    # the guidance and the prompt matter (measured 4.8e-3 for the prompt: the tiny model's
    # text is mostly template and padding; 1e4 times the float rounding)
    assert np.abs(guided - plain).mean() > 0.01
    assert np.abs(ours(HORSE, guidance_scale=1.0) - plain).mean() > 2e-3
