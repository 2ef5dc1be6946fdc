"""Qwen3-VL's vision tower and its picture preparation against transformers on torch CPU (the
tiny random Qwen3-VL's three-block tower: a 4x4 learned position grid resampled to larger,
non-square grids, two deepstack mergers)."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers is a test-only reference")
import torch
from qwen3vl_tiny import QWEN3VL_PIXELS, QWEN3VL_VISION, tiny_qwen3vl
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models.qwen3_vision import (
    QWEN3_VL_PIXELS,
    Qwen3VLVisionModel,
    pixel_options,
    qwen3_vision_pixels,
)

TOL = 1e-5  # float32 through three blocks, measured 2.3e-6 of the largest (3.0)
F16_TOL = 5e-3


def _reference() -> torch.nn.Module:
    return tiny_qwen3vl(290, vision=QWEN3VL_VISION).model.visual


def _ours(reference: torch.nn.Module, device: gpucore.Device) -> Qwen3VLVisionModel:
    ours = Qwen3VLVisionModel(reference.config.to_dict(), device=device)
    ours.load_state_dict(state_dict(reference))
    return ours


def _check(reference: torch.nn.Module, ours: Qwen3VLVisionModel, grids: list) -> np.ndarray:
    grid = np.asarray(grids, np.int64)
    pixels = np.random.default_rng(1).standard_normal(
        (int(np.prod(grid, axis=1).sum()), 3 * 2 * 16 * 16)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(pixels), torch.from_numpy(grid))
    got = ours(pixels, grid)
    assert got.tokens.shape == tuple(expected.pooler_output.shape)
    assert_close(got.tokens.numpy(), expected.pooler_output.numpy(), tol=TOL)
    assert len(got.deepstack) == len(expected.deepstack_features) == 2
    for mine, theirs in zip(got.deepstack, expected.deepstack_features, strict=True):
        assert_close(mine.numpy(), theirs.numpy(), tol=TOL)
    return got.tokens.numpy()


def test_tower_equals_transformers(first_device: gpucore.Device) -> None:
    """One picture of 6x10 patches, then two at once (each attends within itself); the
    learned positions visibly matter."""
    reference = _reference()
    ours = _ours(reference, first_device)
    alone = _check(reference, ours, [[1, 6, 10]])
    both = _check(reference, ours, [[1, 6, 10], [1, 4, 8]])
    assert_close(both[: len(alone)], alone, tol=TOL)
    ours.pos_embed.weight = ours.pos_embed.weight * 0
    grid = np.asarray([[1, 6, 10]])
    pixels = np.random.default_rng(1).standard_normal((60, 1536)).astype(np.float32)
    moved = ours(pixels, grid).tokens.numpy()
    assert np.abs(moved - alone).mean() > 0.1 * np.abs(alone).mean()


def test_pixels_equal_image_processor(first_device: gpucore.Device) -> None:
    """Resized to multiples of 32 within the pixel limits, normalized by 0.5 / 0.5, in
    merge-block patch order: transformers' Qwen2VLImageProcessor (its Pillow backend) with
    Qwen3-VL's settings; pixel_options reads its preprocessor_config.json."""
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    options = pixel_options(QWEN3VL_PIXELS)
    assert options == {**QWEN3_VL_PIXELS, "min_pixels": 64 * 64, "max_pixels": 96 * 160}
    assert pixel_options(None) == QWEN3_VL_PIXELS
    assert pixel_options({"min_pixels": 5, "max_pixels": 7})["max_pixels"] == 7
    processor = Qwen2VLImageProcessorPil(**QWEN3VL_PIXELS)
    rng = np.random.default_rng(2)
    for shape in [(61, 97, 3), (200, 150, 3), (40, 30, 3)]:  # resized, shrunk, grown
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        expected = processor(Image.fromarray(image), return_tensors="np")
        pixels, grid = qwen3_vision_pixels(image, options, device=first_device)
        np.testing.assert_array_equal(grid, expected["image_grid_thw"])
        assert_close(pixels, expected["pixel_values"], tol=1e-5)  # Pillow's bicubic


@pytest.mark.nodevice
def test_bad_input() -> None:
    """A config the tower cannot run, patches that do not fit the grids: one line each."""
    with pytest.raises(ValueError, match="hidden_act 'relu'"):
        Qwen3VLVisionModel({**QWEN3VL_VISION, "hidden_act": "relu"})
    with pytest.raises(ValueError, match="must be a square"):
        Qwen3VLVisionModel({**QWEN3VL_VISION, "num_position_embeddings": 15})
    with pytest.raises(ValueError, match=re.escape("reads (24, 1536) patches")):
        Qwen3VLVisionModel(QWEN3VL_VISION)(np.zeros((20, 1536), np.float32), [[1, 4, 6]])


def test_tower_float16(f16_device: gpucore.Device) -> None:
    """float16 weights (the rotary's tables stay float32): transformers' float32 tower's
    tokens and deepstack features to float16 error."""
    reference = _reference()
    ours = Qwen3VLVisionModel(reference.config.to_dict(), dtype=np.float16, device=f16_device)
    ours.load_state_dict(state_dict(reference))
    grid = np.asarray([[1, 6, 10]])
    pixels = np.random.default_rng(1).standard_normal((60, 1536)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(pixels), torch.from_numpy(grid))
    got = ours(pixels, grid)
    assert got.tokens.dtype == np.float16
    for mine, theirs in zip([got.tokens, *got.deepstack],
                            [expected.pooler_output, *expected.deepstack_features], strict=True):
        assert_close(mine.numpy(), theirs.numpy(), dtype=np.float16, tol=F16_TOL)
