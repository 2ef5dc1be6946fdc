"""FLUX.2's reference pictures (multi-reference editing) on the pipeline: klein with one
and with two references equals diffusers' Flux2KleinPipeline(image=[...]), each reference
visibly changing the picture; a reference whose sides are not multiples is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from flux2_tiny import tiny_flux2_pipeline
from PIL import Image

import gpucore
from diffusion.pipelines.flow.flux2 import Flux2KleinPipeline


def _picture(seed: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_flux2_references_as_diffusers(first_device: gpucore.Device, tmp_path: Path) -> None:
    reference: Any = tiny_flux2_pipeline(tmp_path, distilled=True)
    pipe = Flux2KleinPipeline.from_pretrained(tmp_path / "flux2-klein", device=first_device)
    refs = [_picture(1, 64, 64), _picture(2, 80, 64)]  # diffusers wants 64 px at least
    settings = dict(height=16, width=24, num_inference_steps=2, max_sequence_length=32)

    def theirs(images: list[np.ndarray]) -> np.ndarray:
        return reference(prompt="a red circle", image=[Image.fromarray(r) for r in images]
                         or None, generator=torch.Generator().manual_seed(7),
                         output_type="np", **settings).images[0]

    pictures = []
    for count in (0, 1, 2):
        ours = pipe("a red circle", seed=7, image=[r / 255.0 for r in refs[:count]],
                    **settings)[0]
        assert np.abs(ours - theirs(refs[:count])).mean() < 0.01
        pictures.append(ours)
    assert np.abs(pictures[1] - pictures[0]).mean() > 0.01  # the first reference matters
    assert np.abs(pictures[2] - pictures[1]).mean() > 0.01  # and the second
    with pytest.raises(ValueError, match="multiples of 4"):
        pipe("a red circle", image=[np.zeros((10, 12, 3))], **settings)
