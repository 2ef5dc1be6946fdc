"""Qwen2.5-VL's vision tower and image processor against transformers on torch CPU (a tiny
random tower: two window blocks and one full one, patch grids that are not a multiple of the
attention window)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers is a test-only reference")
import torch
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models.qwen_vision import Qwen2_5_VisionTransformer, qwen_vision_pixels

TOL = 1e-3  # f32 through three blocks, typically ~1e-6
TINY = {"depth": 3, "hidden_size": 32, "intermediate_size": 40, "num_heads": 2,
        "out_hidden_size": 24, "patch_size": 14, "spatial_merge_size": 2,
        "temporal_patch_size": 2, "window_size": 56, "fullatt_block_indexes": [1],
        "hidden_act": "silu"}


def _reference() -> torch.nn.Module:
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
        Qwen2_5_VisionTransformerPretrainedModel,
    )

    torch.manual_seed(0)
    config = Qwen2_5_VLVisionConfig(**TINY)
    config._attn_implementation = "eager"
    model = Qwen2_5_VisionTransformerPretrainedModel(config).eval()
    with torch.no_grad():  # weights large enough that attention picks its keys
        for name, param in model.named_parameters():
            scale = 1.0 if "qkv.weight" in name else 0.3 if param.ndim > 1 else 0.1
            param.copy_(torch.randn_like(param) * scale)
    return model


def _run(reference: torch.nn.Module, pixels: np.ndarray, grids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return reference(torch.from_numpy(pixels), torch.from_numpy(grids)).pooler_output.numpy()


def test_tower_equals_transformers(device: gpucore.Device) -> None:
    """One picture of 5x7 merge blocks in windows of 2x2 (partial ones at the edges)."""
    _check_tower(device, [[1, 10, 14]])


def test_two_pictures_at_once(first_device: gpucore.Device) -> None:
    """Full attention stays within each picture."""
    _check_tower(first_device, [[1, 6, 4], [1, 8, 10]])


def _check_tower(device: gpucore.Device, grids: list) -> None:
    reference = _reference()
    ours = Qwen2_5_VisionTransformer(TINY, device=device)
    ours.load_state_dict(state_dict(reference))
    grid = np.asarray(grids, np.int64)
    pixels = np.random.default_rng(1).standard_normal(
        (int(np.prod(grid, axis=1).sum()), 3 * 2 * 14 * 14)).astype(np.float32)
    expected = _run(reference, pixels, grid)
    got = ours(pixels, grid).numpy()
    assert got.shape == expected.shape
    assert_close(got, expected, tol=TOL)
    # the windows matter: the same tower with full attention everywhere differs visibly
    reference.fullatt_block_indexes = [0, 1, 2]
    assert np.abs(_run(reference, pixels, grid) - expected).mean() > 10 * TOL


def test_pixels_equal_image_processor(first_device: gpucore.Device) -> None:
    """Resized to a multiple of 28 within the pixel limits, normalized, in merge-block patch
    order: transformers' Qwen2VLImageProcessor (its Pillow backend)."""
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    image = np.random.default_rng(2).integers(0, 256, (61, 97, 3), dtype=np.uint8)
    processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=84 * 112)
    expected = processor(Image.fromarray(image), return_tensors="np")
    pixels, grid = qwen_vision_pixels(image, min_pixels=56 * 56, max_pixels=84 * 112,
                                      device=first_device)
    np.testing.assert_array_equal(grid, expected["image_grid_thw"])
    assert pixels.shape == expected["pixel_values"].shape
    assert_close(pixels, expected["pixel_values"], tol=1e-5)  # Pillow's bicubic, exactly


def test_tower_float16(f16_device: gpucore.Device) -> None:
    """float16 weights (the rotary's tables stay float32): the float32 reference's tokens to
    float16 error."""
    reference = _reference()
    ours = Qwen2_5_VisionTransformer(TINY, dtype=np.float16, device=f16_device)
    ours.load_state_dict(state_dict(reference))
    grid = np.asarray([[1, 10, 14]], np.int64)
    pixels = np.random.default_rng(1).standard_normal((140, 3 * 2 * 14 * 14)).astype(np.float32)
    got = ours(pixels, grid).numpy()
    assert got.dtype == np.float16
    assert_close(got, _run(reference, pixels, grid), dtype=np.float16, tol=2e-2)


def _transparent_pictures() -> list:
    """RGBA, LA and a palette picture with a transparent entry, whose transparent and
    half-transparent pixels hide a loud colour (magenta; bright grey for LA)."""
    from PIL import Image

    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (61, 97, 4), dtype=np.uint8)
    rgba[:25, :, :3], rgba[:25, :, 3] = (255, 0, 255), 0
    rgba[25:40, :, :3], rgba[25:40, :, 3] = (255, 0, 255), rng.integers(0, 128, (15, 97))
    palette = Image.fromarray(rgba[..., :3]).quantize(8)
    palette.info["transparency"] = int(np.asarray(palette)[0, 0])  # the magenta entry
    return [Image.fromarray(rgba, "RGBA"), Image.fromarray(rgba, "RGBA").convert("LA"),
            palette]


def test_transparent_pixels_over_white(first_device: gpucore.Device) -> None:
    """A picture's transparency composited over white before it is read, not dropped (which
    shows the colour hidden under it): transformers' Qwen2VLImageProcessor (convert_to_rgb)
    for RGBA, LA and a palette with a transparent entry."""
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=84 * 112)
    for picture in _transparent_pictures():
        expected = processor(picture, return_tensors="np")["pixel_values"]
        pixels, _ = qwen_vision_pixels(picture, min_pixels=56 * 56, max_pixels=84 * 112,
                                       device=first_device)
        assert_close(pixels, expected, tol=1e-5)
        # the hidden colour visibly matters (the test's premise; from an array, as Pillow's
        # RGB of a palette keeps its transparent entry as a colour key)
        opaque = Image.fromarray(np.asarray(picture.convert("RGB")))
        shown = processor(opaque, return_tensors="np")["pixel_values"]
        assert np.abs(shown - expected).mean() > 0.05
