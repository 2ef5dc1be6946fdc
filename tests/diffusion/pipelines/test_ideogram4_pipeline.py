"""Ideogram 4: Ideogram4Pipeline on gpustd against diffusers' (tiny, random, float32; the
prompt rewrite off), its per-step guidance schedule with the unconditional transformer, the
prompt visibly mattering; the logit-normal sigmas against diffusers' own function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch

import gpucore
from diffusion.pipelines.flow.ideogram4 import Ideogram4Pipeline, logit_normal_sigmas

HEIGHT, WIDTH = 24, 40  # 6 x 10 patches of the tiny VAE's 2x latents
RED = "a red circle on a blue square"
HORSE = "an astronaut riding a horse"
SCHEDULE = [4.0, 1.0, 2.5]  # the middle step runs no unconditional pass (weighed 0)


def _diffusers(reference: Any, prompt: str, **settings: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(prompt, height=HEIGHT, width=WIDTH, max_sequence_length=48,
                           generator=torch.Generator().manual_seed(7), output_type="np",
                           **settings).images
    return np.asarray(images[0])


@pytest.mark.nodevice
def test_logit_normal_sigmas() -> None:
    """diffusers' `_logit_normal_sigmas` (float64 torch, then float32) for a few sizes."""
    from diffusers.pipelines.ideogram4.pipeline_ideogram4 import (
        _logit_normal_sigmas,
        _resolution_aware_mu,
    )

    for steps, (height, width) in ((48, (2048, 2048)), (5, (24, 40)), (1, (512, 768))):
        mu = _resolution_aware_mu(height, width, 0.0)
        expected = _logit_normal_sigmas(steps, mu, std=1.5).numpy()
        np.testing.assert_allclose(logit_normal_sigmas(steps, mu), expected, rtol=1e-6)


def test_pipeline_is_diffusers(first_device: gpucore.Device,
                               tiny_ideogram4: tuple[Path, Any]) -> None:
    """The picture over a per-step guidance schedule (one step at 1: no unconditional pass),
    and a batch of two prompts of different lengths (diffusers left-pads the shorter) at a
    constant scale; the prompt visibly matters."""
    folder, reference = tiny_ideogram4
    pipe = Ideogram4Pipeline.from_pretrained(folder, device=first_device)

    def ours(prompt: str, **settings: Any) -> np.ndarray:
        return pipe(prompt, height=HEIGHT, width=WIDTH, seed=7, **settings)[0]

    scheduled = ours(RED, num_inference_steps=3, guidance_schedule=SCHEDULE)
    expected = _diffusers(reference, RED, num_inference_steps=3, guidance_schedule=SCHEDULE)
    np.testing.assert_allclose(scheduled, expected, atol=2e-5)
    batch = pipe([RED, HORSE], height=HEIGHT, width=WIDTH, seed=7, num_inference_steps=1,
                 guidance_scale=3.0)
    with torch.no_grad():
        expected = reference([RED, HORSE], height=HEIGHT, width=WIDTH, max_sequence_length=48,
                             num_inference_steps=1, guidance_scale=3.0, guidance_schedule=None,
                             generator=torch.Generator().manual_seed(7), output_type="np").images
    np.testing.assert_allclose(batch, expected, atol=2e-5)
    other = ours(HORSE, num_inference_steps=3, guidance_schedule=SCHEDULE)
    assert np.abs(other - scheduled).mean() > 0.01  # the prompt matters


@pytest.mark.nodevice
def test_bad_folders_get_one_line(tmp_path: Path) -> None:
    """A folder without the unconditional transformer, or another pipeline's, is refused
    naming what is wrong."""
    import json

    from diffusion.loaders.errors import WeightsError
    from diffusion.loaders.ideogram4 import ideogram4_family, load_ideogram4_folder

    index = {"_class_name": "Ideogram4Pipeline", **{
        name: ["diffusers", "X"] for name in ("transformer", "vae", "text_encoder",
                                              "tokenizer", "scheduler")}}
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    assert ideogram4_family(tmp_path) == "ideogram4"
    with pytest.raises(WeightsError, match="unconditional_transformer") as info:
        load_ideogram4_folder(tmp_path)
    assert "\n" not in str(info.value)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    assert ideogram4_family(tmp_path) is None


def test_bad_calls_get_one_line(first_device: gpucore.Device,
                                tiny_ideogram4: tuple[Path, Any]) -> None:
    folder, _ = tiny_ideogram4
    pipe = Ideogram4Pipeline.from_pretrained(folder, device=first_device)
    with pytest.raises(ValueError, match="not both"):
        pipe(RED, height=HEIGHT, width=WIDTH, num_inference_steps=2, guidance_scale=2.0,
             guidance_schedule=[2.0, 2.0])
    with pytest.raises(ValueError, match="one a step"):
        pipe(RED, height=HEIGHT, width=WIDTH, num_inference_steps=2)
    with pytest.raises(ValueError, match="multiples of 4"):
        pipe(RED, height=HEIGHT + 2, width=WIDTH, num_inference_steps=2,
             guidance_schedule=[2.0, 2.0])
