"""ChronoEdit's picture edit against diffusers' ChronoEditPipeline on a tiny random folder
(UMT5, CLIP vision, the Wan VAE, flow UniPC): the plain edit (2 latent frames) and the temporal
reasoning (a 3-latent-frame video cut to its ends after a step), the picture and the
instruction each visibly changing the edit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from chronoedit_tiny import tiny_chronoedit_pipeline
from PIL import Image

import gpucore
from diffusion.pipelines.video.chronoedit import ChronoEditPipeline

PROMPT = "make the cube blue"
TOL = 1e-4  # mean absolute difference of [0, 1] pixels; measured 2e-6


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("tiny-chronoedit")
    return root / "chronoedit", tiny_chronoedit_pipeline(root)


def _picture(seed: int) -> Image.Image:
    # not the edit's size nor square: the VAE's resize and CLIP's crop both matter
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((30, 44, 3)) * 255).astype(np.uint8))


def _reference(pipe: Any, picture: Image.Image, prompt: str, monkeypatch: pytest.MonkeyPatch,
               **settings: Any) -> np.ndarray:
    from diffusers.pipelines.chronoedit import pipeline_chronoedit
    from diffusers.pipelines.wan import pipeline_wan

    # its prompt cleaning calls ftfy, not installed here; WanPipeline's skips it, the same
    # for these ASCII prompts
    monkeypatch.setattr(pipeline_chronoedit, "prompt_clean", pipeline_wan.prompt_clean)
    return pipe(image=picture, prompt=prompt, negative_prompt="blurry", height=32, width=48,
                num_inference_steps=3, guidance_scale=3.0, output_type="np",
                generator=torch.Generator().manual_seed(4), **settings).frames[0][-1]


@pytest.mark.parametrize("reasoning", [
    {}, {"enable_temporal_reasoning": True, "num_frames": 9, "num_temporal_reasoning_steps": 1}],
    ids=["edit", "temporal-reasoning"])
def test_edit_equals_diffusers(first_device: gpucore.Device, tiny_folder: tuple[Path, Any],
                               monkeypatch: pytest.MonkeyPatch, reasoning: dict[str, Any]
                               ) -> None:
    folder, reference = tiny_folder
    pipe = ChronoEditPipeline.from_pretrained(folder, device=first_device)

    def ours(picture: Image.Image, prompt: str) -> np.ndarray:
        # the final latents (the decode, the slow part, only where pictures are compared)
        return pipe.edit(picture, prompt, negative_prompt="blurry", height=32, width=48,
                         num_inference_steps=3, guidance_scale=3.0, seed=4,
                         output_type="latent", **reasoning)

    latents = ours(_picture(1), PROMPT)
    got = pipe.edited(latents)[0]
    expected = _reference(reference, _picture(1), PROMPT, monkeypatch, **reasoning)
    assert got.shape == expected.shape == (32, 48, 3)
    assert np.abs(got - expected).mean() < TOL
    if reasoning:
        return
    # the picture and the instruction matter (measured: 0.42 and 0.46 of the
    # latents' mean size)
    scale = np.abs(latents).mean()
    assert np.abs(ours(_picture(2), PROMPT) - latents).mean() > 0.2 * scale
    assert np.abs(ours(_picture(1), "a green sphere under a lamp") - latents).mean() \
        > 0.2 * scale
