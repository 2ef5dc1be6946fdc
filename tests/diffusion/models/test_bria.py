"""The Bria 3.2 transformer against diffusers' BriaTransformer2DModel on torch CPU (tiny,
random): float32 with an odd text length and a patch grid no tile divides, and float16."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from bria_tiny import BRIA_TINY, tiny_bria_transformer
from sd_tiny import state_dict
from support import assert_close

import gpucore
import gpustd
from diffusion.models.bria import BriaTransformer2DModel
from diffusion.pipelines.flow.flux import image_ids

ROWS, COLUMNS, TEXT = 3, 7, 11  # 21 image patches, 11 text tokens


def _inputs(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    latents = rng.standard_normal((2, ROWS * COLUMNS, BRIA_TINY["in_channels"]))
    text = 2 * rng.standard_normal((2, TEXT, BRIA_TINY["joint_attention_dim"]))
    return latents.astype(np.float32), text.astype(np.float32)


def _reference(model: object, latents: np.ndarray, text: np.ndarray, t: np.ndarray
               ) -> np.ndarray:
    from diffusers import BriaPipeline

    img_ids = BriaPipeline._prepare_latent_image_ids(1, ROWS, COLUMNS, "cpu", torch.float32)
    with torch.no_grad():
        return model(torch.from_numpy(latents), torch.from_numpy(text),  # type: ignore[operator]
                     timestep=torch.from_numpy(t), img_ids=img_ids,
                     txt_ids=torch.zeros(TEXT, 3)).sample.numpy()


def test_bria_transformer(first_device: gpucore.Device) -> None:
    """float32 against diffusers (the positions as BriaPipeline makes them); the text
    visibly matters."""
    reference = tiny_bria_transformer()
    ours = BriaTransformer2DModel(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    latents, text = _inputs(np.random.default_rng(3))
    t = np.array([830.0, 250.5], np.float32)  # the scheduler's timesteps, not sigmas
    expected = _reference(reference, latents, text, t)
    got = ours(gpustd.asarray(latents, device=first_device),
               gpustd.asarray(text, device=first_device), t,
               image_ids(ROWS, COLUMNS), np.zeros((TEXT, 3), np.float32)).numpy()
    # the worst element's |error| / (rms + |expected|) within 2e-6 on lavapipe
    assert_close(got, expected, tol=2e-6)
    other = _reference(reference, latents, text[::-1].copy(), t)
    assert np.abs(other - expected).mean() > 0.05 * np.abs(expected).mean()


def test_bria_transformer_f16(f16_device: gpucore.Device) -> None:
    """float16 weights and activations against the float32 reference."""
    reference = tiny_bria_transformer()
    ours = BriaTransformer2DModel(dict(reference.config), dtype=np.float16, device=f16_device)
    ours.load_state_dict(state_dict(reference))
    latents, text = _inputs(np.random.default_rng(4))
    t = np.array([500.0, 970.5], np.float32)  # float16 numbers: diffusers rounds t
    expected = _reference(reference, latents, text, t)
    got = ours(gpustd.asarray(latents, dtype=np.float16, device=f16_device),
               gpustd.asarray(text, dtype=np.float16, device=f16_device), t,
               image_ids(ROWS, COLUMNS), np.zeros((TEXT, 3), np.float32))
    assert got.dtype == np.float16
    # within 3e-3 on lavapipe (float16 rounding through every block)
    assert_close(got.numpy().astype(np.float32), expected, tol=3e-3)


def test_bria_config_refused(first_device: gpucore.Device) -> None:
    with pytest.raises(ValueError, match="patch_size 1"):
        BriaTransformer2DModel({**BRIA_TINY, "patch_size": 2}, device=first_device)
    with pytest.raises(ValueError, match="guidance"):
        BriaTransformer2DModel({**BRIA_TINY, "guidance_embeds": True}, device=first_device)
