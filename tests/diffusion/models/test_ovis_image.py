"""The Ovis-Image transformer against diffusers' OvisImageTransformer2DModel on torch CPU (tiny,
random): float32 with an odd text length and a patch grid no tile divides, and float16."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from ovis_image_tiny import OVIS_TINY, tiny_ovis_transformer
from sd_tiny import state_dict
from support import assert_close

import gpucore
import gpustd
from diffusion.models.longcat_image_prompt import text_positions
from diffusion.models.ovis_image import OvisImageTransformer2DModel
from diffusion.pipelines.flow.flux import image_ids

ROWS, COLUMNS, TEXT = 3, 7, 11  # 21 image patches, 11 text tokens


def _inputs(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    latents = rng.standard_normal((2, ROWS * COLUMNS, OVIS_TINY["in_channels"]))
    text = 2 * rng.standard_normal((2, TEXT, OVIS_TINY["joint_attention_dim"]))
    return latents.astype(np.float32), text.astype(np.float32)


def _reference(model: object, latents: np.ndarray, text: np.ndarray, t: np.ndarray
               ) -> np.ndarray:
    """diffusers' prediction, the positions as OvisImagePipeline makes them."""
    from diffusers import OvisImagePipeline

    img_ids = OvisImagePipeline._prepare_latent_image_ids(1, ROWS, COLUMNS, "cpu",
                                                          torch.float32)
    txt_ids = torch.zeros(TEXT, 3)
    txt_ids[:, 1] = txt_ids[:, 2] = torch.arange(TEXT)
    with torch.no_grad():
        return model(torch.from_numpy(latents), torch.from_numpy(text),  # type: ignore[operator]
                     torch.from_numpy(t), img_ids, txt_ids).sample.numpy()


def test_ovis_transformer(first_device: gpucore.Device) -> None:
    """float32 against diffusers; the text visibly matters."""
    reference = tiny_ovis_transformer()
    ours = OvisImageTransformer2DModel(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    latents, text = _inputs(np.random.default_rng(3))
    t = np.array([0.83, 0.25], np.float32)
    expected = _reference(reference, latents, text, t)
    got = ours(gpustd.asarray(latents, device=first_device),
               gpustd.asarray(text, device=first_device), t,
               image_ids(ROWS, COLUMNS), text_positions(TEXT)).numpy()
    # the worst element's |error| / (rms + |expected|) measured on lavapipe: 1.8e-6
    assert_close(got, expected, tol=1e-5)
    other = _reference(reference, latents, text[::-1].copy(), t)
    assert np.abs(other - expected).mean() > 0.05 * np.abs(expected).mean()


def test_ovis_transformer_f16(f16_device: gpucore.Device) -> None:
    """float16 weights and activations against the float32 reference."""
    reference = tiny_ovis_transformer()
    ours = OvisImageTransformer2DModel(dict(reference.config), dtype=np.float16,
                                       device=f16_device)
    ours.load_state_dict(state_dict(reference))
    latents, text = _inputs(np.random.default_rng(4))
    t = np.array([0.5, 0.97], np.float32)
    expected = _reference(reference, latents, text, t)
    got = ours(gpustd.asarray(latents, dtype=np.float16, device=f16_device),
               gpustd.asarray(text, dtype=np.float16, device=f16_device), t,
               image_ids(ROWS, COLUMNS), text_positions(TEXT))
    assert got.dtype == np.float16
    # measured on lavapipe: 7.9e-3 (float16 rounding through every block)
    assert_close(got.numpy().astype(np.float32), expected, tol=1e-2)


def test_ovis_patch_size_refused(first_device: gpucore.Device) -> None:
    with pytest.raises(ValueError, match="patch_size 1"):
        OvisImageTransformer2DModel({**OVIS_TINY, "patch_size": 2}, device=first_device)
