"""The AuraFlow transformer against diffusers' AuraFlowTransformer2DModel on torch CPU (tiny,
random): float32 on a latent no tile divides (an odd patch grid, off the position table's
centre), float16, and its one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from auraflow_tiny import AURAFLOW_TINY, tiny_auraflow_transformer
from sd_tiny import state_dict
from support import assert_close

import gpucore
import gpustd
from diffusion.models.auraflow import AuraFlowTransformer2DModel

HEIGHT, WIDTH, TEXT = 10, 14, 11  # a 5 x 7 patch grid, 11 text tokens


def _inputs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    latents = rng.standard_normal((2, AURAFLOW_TINY["in_channels"], HEIGHT, WIDTH))
    text = 2 * rng.standard_normal((2, TEXT, AURAFLOW_TINY["joint_attention_dim"]))
    return latents.astype(np.float32), text.astype(np.float32)


def _reference(model: object, latents: np.ndarray, text: np.ndarray, t: np.ndarray
               ) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(latents), torch.from_numpy(text),  # type: ignore[operator]
                     torch.from_numpy(t)).sample.numpy()


def test_auraflow_transformer(first_device: gpucore.Device) -> None:
    """float32 against diffusers; the text, the positions and the registers visibly
    matter."""
    reference = tiny_auraflow_transformer()
    ours = AuraFlowTransformer2DModel(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    latents, text = _inputs(np.random.default_rng(3))
    # the tiny model's gates let the text through at some timesteps only (here 3% and 29%)
    t = np.array([0.5, 0.97], np.float32)
    expected = _reference(reference, latents, text, t)
    got = ours(gpustd.asarray(latents, device=first_device),
               gpustd.asarray(text, device=first_device), t).numpy()
    # the worst element's |error| / (rms + |expected|) measured on lavapipe: 4e-7
    assert_close(got, expected, tol=1e-5)
    # another prompt (the text's order alone does not matter: no positions on the text)
    other = _reference(reference, latents, text[::-1].copy(), t)
    assert np.abs(other - expected).mean() > 0.05 * np.abs(expected).mean()
    with torch.no_grad():  # the position table and the registers are read
        for p in (reference.pos_embed.pos_embed, reference.register_tokens):
            p.mul_(0.5)
    moved = _reference(reference, latents, text, t)
    assert np.abs(moved - expected).mean() > 0.05 * np.abs(expected).mean()


def test_auraflow_transformer_f16(f16_device: gpucore.Device) -> None:
    """float16 weights and activations against the float32 reference."""
    reference = tiny_auraflow_transformer()
    ours = AuraFlowTransformer2DModel(dict(reference.config), dtype=np.float16,
                                      device=f16_device)
    ours.load_state_dict(state_dict(reference))
    latents, text = _inputs(np.random.default_rng(4))
    t = np.array([0.83, 0.25], np.float32)
    expected = _reference(reference, latents, text, t)
    got = ours(gpustd.asarray(latents, dtype=np.float16, device=f16_device),
               gpustd.asarray(text, dtype=np.float16, device=f16_device), t)
    assert got.dtype == np.float16
    # measured on lavapipe: 3e-3 (float16 rounding through every block)
    assert_close(got.numpy().astype(np.float32), expected, tol=1e-2)


def test_auraflow_refusals(first_device: gpucore.Device) -> None:
    ours = AuraFlowTransformer2DModel(AURAFLOW_TINY, device=first_device)
    text = gpustd.asarray(np.zeros((1, 3, 32), np.float32), device=first_device)
    with pytest.raises(ValueError, match="position table of 8 x 8"):
        ours(gpustd.asarray(np.zeros((1, 4, 18, 4), np.float32), device=first_device), text,
             [0.5])
    with pytest.raises(ValueError, match="multiples of the patch size"):
        ours(gpustd.asarray(np.zeros((1, 4, 5, 4), np.float32), device=first_device), text,
             [0.5])
    with pytest.raises(ValueError, match="caption_projection_dim 24"):
        AuraFlowTransformer2DModel({**AURAFLOW_TINY, "caption_projection_dim": 24})
