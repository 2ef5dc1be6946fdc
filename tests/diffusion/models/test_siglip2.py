"""SigLIP2's NaFlex vision tower and image processor against transformers on torch CPU (a tiny
random Siglip2VisionModel with a 4x4 position table, pictures of odd sizes whose patch grids
shrink one side of the table and stretch the other)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers is a test-only reference")
import torch
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models.siglip2 import Siglip2Vision, naflex_size, siglip2_patches
from gpustd import asarray

TOL = 1e-5  # f32 through two layers, measured 1e-6 of the states' size
TINY = {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 2, "patch_size": 4, "num_patches": 16}
MAX_PATCHES = 24
# (H, W): grids 3x8 (table rows shrunk, columns stretched), 6x4 and 4x5 (4 padded patches)
PICTURES = [(19, 53), (53, 37), (37, 43)]


def _reference() -> torch.nn.Module:
    from transformers import Siglip2VisionConfig, Siglip2VisionModel

    torch.manual_seed(0)
    config = Siglip2VisionConfig(**TINY)
    config._attn_implementation = "eager"
    model = Siglip2VisionModel(config).eval()
    with torch.no_grad():  # weights large enough that attention picks its keys
        for name, param in model.named_parameters():
            scale = (0.6 if "proj.weight" in name or "position" in name
                     else 0.3 if param.ndim > 1 else 0.1)
            param.copy_(torch.randn_like(param) * scale)
    return model


def _processor() -> object:
    from transformers.models.siglip2.image_processing_pil_siglip2 import (
        Siglip2ImageProcessorPil,
    )

    return Siglip2ImageProcessorPil(patch_size=TINY["patch_size"], max_num_patches=MAX_PATCHES)


def _picture(size: tuple[int, int], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def _run(reference: torch.nn.Module, inputs: dict) -> np.ndarray:
    """diffusers' prepare_siglip_embeds: the real patches' states on their grid."""
    h, w = (int(v) for v in inputs["spatial_shapes"][0])
    with torch.no_grad():
        hidden = reference(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    return hidden.last_hidden_state[0, :h * w].reshape(h, w, -1).numpy()


def test_naflex_size_equals_transformers() -> None:
    from transformers.models.siglip2.image_processing_pil_siglip2 import (
        get_image_size_for_max_num_patches,
    )

    rng = np.random.default_rng(0)
    for height, width, patch, limit in zip(rng.integers(1, 3000, 60), rng.integers(1, 3000, 60),
                                           rng.choice([14, 16], 60), rng.integers(1, 1100, 60)):
        args = (int(height), int(width), int(patch), int(limit))
        assert naflex_size(*args) == get_image_size_for_max_num_patches(*args), args


def test_patches_equal_image_processor(first_device: gpucore.Device) -> None:
    """Resized (Pillow's bilinear) to the grid, normalized, patch by patch, padded: exactly
    transformers' Siglip2ImageProcessor (its Pillow backend); an upscaled picture too."""
    for size in [*PICTURES, (5, 7)]:
        image = _picture(size)
        expected = _processor()(images=[image], return_tensors="np")
        pixels, grid, mask = siglip2_patches(image, TINY["patch_size"], MAX_PATCHES,
                                             device=first_device)
        assert grid == tuple(expected["spatial_shapes"][0])
        np.testing.assert_array_equal(mask, expected["pixel_attention_mask"][0])
        np.testing.assert_array_equal(pixels, expected["pixel_values"][0])


def test_tower_equals_transformers(device: gpucore.Device) -> None:
    """encode == prepare_siglip_embeds's states of the padded, masked batch (the pooling head
    in the state dict left out)."""
    reference = _reference()
    ours = Siglip2Vision.from_state_dict(state_dict(reference), TINY, np.float32,
                                         device=device, max_num_patches=MAX_PATCHES)
    for size in PICTURES:
        image = _picture(size)
        inputs = dict(_processor()(images=[image], return_tensors="np"))
        expected = _run(reference, inputs)
        got, grid = ours.encode(image)
        assert grid == expected.shape[:2]
        assert got.dtype == np.float32
        assert_close(got.numpy(), expected, tol=TOL)


def test_premises(first_device: gpucore.Device) -> None:
    """The tests' premises: on the 3x8 grid (the table's rows shrunk), a resize without the
    antialias, or one position for every patch, changes the states visibly; on the 4x5 grid
    the padding would too were it not masked (here it is never encoded)."""
    import torch.nn.functional as F

    reference = _reference()
    ours = Siglip2Vision.from_state_dict(state_dict(reference), TINY, np.float32,
                                         device=first_device, max_num_patches=MAX_PATCHES)
    image = _picture(PICTURES[0])
    inputs = dict(_processor()(images=[image], return_tensors="np"))
    expected = _run(reference, inputs)
    table = reference.embeddings.position_embedding.weight.detach().reshape(4, 4, -1)
    plain = F.interpolate(table.permute(2, 0, 1)[None], size=(3, 8), mode="bilinear",
                          align_corners=False)[0].permute(1, 2, 0).reshape(24, -1)
    ours._positions = lambda h, w: asarray(plain.numpy()[None], device=first_device)
    assert np.abs(ours.encode(image)[0].numpy() - expected).mean() > 30 * TOL
    padded = dict(_processor()(images=[_picture(PICTURES[2])], return_tensors="np"))
    masked = _run(reference, padded)
    padded["pixel_attention_mask"] = np.ones_like(padded["pixel_attention_mask"])
    assert np.abs(_run(reference, padded) - masked).mean() > 30 * TOL
    with torch.no_grad():
        reference.embeddings.position_embedding.weight.copy_(table[0, 0].clone())
    assert np.abs(_run(reference, inputs) - expected).mean() > 30 * TOL


def test_tower_float16(f16_device: gpucore.Device) -> None:
    """float16 weights: float32 states, the float32 reference's to float16 error."""
    reference = _reference()
    ours = Siglip2Vision.from_state_dict(state_dict(reference), TINY, np.float16,
                                         device=f16_device, max_num_patches=MAX_PATCHES)
    image = _picture(PICTURES[2])
    got, _ = ours.encode(image)
    assert got.dtype == np.float32
    expected = _run(reference, dict(_processor()(images=[image], return_tensors="np")))
    assert_close(got.numpy(), expected, dtype=np.float16, tol=5e-3)  # measured 1.4e-3


def test_bad_picture_is_named(first_device: gpucore.Device) -> None:
    with pytest.raises(ValueError, match=r"a picture for SigLIP2 is a PIL image or uint8 "
                                         r"HxWx3 / HxWx4; got float32"):
        siglip2_patches(np.zeros((8, 8, 3), np.float32), 4, 16, device=first_device)
