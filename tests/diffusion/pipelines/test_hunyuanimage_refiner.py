"""HunyuanImage 2.1's refiner against diffusers' HunyuanImageRefinerPipeline on torch CPU (a
tiny random folder, float32): a 32x48 picture refined in 3 steps from seed 7, its latents
and pictures; the picture, the prompt and the guidance scale visibly matter. diffusers pads
the prompt to 256 tokens, the transformer masking the padding; here its limit is cut to the
prompt's own length, which keeps the reference's run short."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from hunyuanimage_refiner_tiny import tiny_refiner_pipeline
from support import assert_close

import gpucore
from diffusion.pipelines.flow.hunyuanimage_refiner import HunyuanImageRefinerPipeline

TOL = 1e-5  # measured worst |error| / (|e| + rms) of the pictures: 2.2e-6
PROMPT = "a red fox in the snow"


def _reference(pipe: object, picture: np.ndarray, prompt: str = PROMPT) -> np.ndarray:
    tokens = len(pipe.tokenizer(pipe.prompt_template_encode.format(prompt)).input_ids)
    pipe.tokenizer_max_length = tokens - pipe.prompt_template_encode_start_idx
    with torch.no_grad():
        return pipe(prompt, image=picture, height=32, width=48, num_inference_steps=3,
                    generator=torch.Generator().manual_seed(7), output_type="np").images


def test_refiner_equals_diffusers(first_device: gpucore.Device, tmp_path: Path) -> None:
    reference = tiny_refiner_pipeline(tmp_path)
    ours = HunyuanImageRefinerPipeline.from_pretrained(tmp_path / "refiner", device=first_device)
    rng = np.random.default_rng(9)
    picture = rng.uniform(0, 1, (1, 32, 48, 3)).astype(np.float32)
    got = ours(PROMPT, image=picture, num_inference_steps=3, seed=7)
    assert got.shape == (1, 32, 48, 3)
    assert_close(got, _reference(reference, picture), tol=TOL)
    # the picture, the prompt and the guidance scale each visibly matter
    other = rng.uniform(0, 1, picture.shape).astype(np.float32)
    for changed in (ours(PROMPT, image=other, num_inference_steps=3, seed=7),
                    ours("a blue car", image=picture, num_inference_steps=3, seed=7),
                    ours(PROMPT, image=picture, num_inference_steps=3, seed=7,
                         distilled_guidance_scale=1.0)):
        assert np.abs(changed - got).mean() > 0.01
    with pytest.raises(ValueError, match=r"asked for 48x48: resize the picture first"):
        ours(PROMPT, image=picture, height=48, width=48)
