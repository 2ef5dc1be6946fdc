"""The CogView4 transformer against diffusers' CogView4Transformer2DModel on torch CPU (tiny,
random): float32 with a text length and a latent grid no tile divides, float16, and the
rotary angles against the ones diffusers builds."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cogview4_tiny import COGVIEW4_TINY, tiny_cogview4_transformer
from sd_tiny import state_dict
from support import assert_close

import gpucore
import gpustd
from diffusion.models.cogview4 import CogView4Transformer2DModel, cogview4_rope_angles

HEIGHT, WIDTH, TEXT = 6, 10, 13  # 3 x 5 patches of 2 x 2, 13 text tokens
SIZES = {"original_size": [[96, 160], [48, 80]], "target_size": [[96, 160], [96, 160]],
         "crop_coords": [[0, 0], [8, 16]]}


def _inputs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    latents = rng.standard_normal((2, COGVIEW4_TINY["in_channels"], HEIGHT, WIDTH))
    text = 2 * rng.standard_normal((2, TEXT, COGVIEW4_TINY["text_embed_dim"]))
    return latents.astype(np.float32), text.astype(np.float32)


def _reference(model: object, latents: np.ndarray, text: np.ndarray, t: np.ndarray,
               dtype: torch.dtype = torch.float32, **sizes: object) -> np.ndarray:
    kwargs = {k: torch.tensor(v, dtype=dtype) for k, v in {**SIZES, **sizes}.items()}
    with torch.no_grad():
        return model(torch.from_numpy(latents).to(dtype),  # type: ignore[operator]
                     torch.from_numpy(text).to(dtype), torch.from_numpy(t),
                     **kwargs).sample.float().numpy()


def _ours(reference: object, device: gpucore.Device, dtype: object) -> object:
    ours = CogView4Transformer2DModel(dict(reference.config),  # type: ignore[attr-defined]
                                      dtype=dtype, device=device)
    ours.load_state_dict(state_dict(reference))
    return ours


def test_cogview4_transformer(first_device: gpucore.Device) -> None:
    """float32 against diffusers; the text, the timestep and the sizes visibly matter."""
    reference = tiny_cogview4_transformer()
    ours = _ours(reference, first_device, np.float32)
    latents, text = _inputs(np.random.default_rng(3))
    t = np.array([830.0, 250.0], np.float32)
    expected = _reference(reference, latents, text, t)
    got = ours(gpustd.asarray(latents, device=first_device),  # type: ignore[operator]
               gpustd.asarray(text, device=first_device), t, **SIZES).numpy()
    assert_close(got, expected, tol=1e-5)
    size = np.abs(expected).mean()
    for other in (_reference(reference, latents, text[::-1].copy(), t),
                  _reference(reference, latents, text, t[::-1].copy()),
                  _reference(reference, latents, text, t, crop_coords=[[0, 0], [0, 0]])):
        assert np.abs(other[1] - expected[1]).mean() > 0.02 * size


def test_cogview4_transformer_f16(f16_device: gpucore.Device) -> None:
    """float16 weights and activations against diffusers in float16 run on CPU."""
    reference = tiny_cogview4_transformer()
    ours = _ours(reference, f16_device, np.float16)
    latents, text = _inputs(np.random.default_rng(4))
    t = np.array([500.0, 971.0], np.float32)
    expected = _reference(reference, latents, text, t)
    half = _reference(reference.half(), latents, text, t, torch.float16)
    got = ours(gpustd.asarray(latents, dtype=np.float16, device=f16_device),  # type: ignore
               gpustd.asarray(text, dtype=np.float16, device=f16_device), t, **SIZES)
    assert got.dtype == np.float16
    error = np.abs(got.numpy().astype(np.float32) - expected)
    assert error.max() < 2 * np.abs(half - expected).max()
    assert error.mean() < 0.01 * np.abs(expected).mean()


@pytest.mark.nodevice
def test_cogview4_rope_is_diffusers() -> None:
    """The angles of a grid whose rows do not divide rope_axes_dim, as diffusers' rotary
    embedding gives them (its cos, sin)."""
    model = tiny_cogview4_transformer()
    cos, sin = model.rope(torch.zeros(1, 16, 2 * 7, 2 * 3))
    angle = cogview4_rope_angles(7, 3, COGVIEW4_TINY["attention_head_dim"],
                                 tuple(COGVIEW4_TINY["rope_axes_dim"]))
    np.testing.assert_allclose(np.cos(angle), cos.numpy(), atol=1e-6)
    np.testing.assert_allclose(np.sin(angle), sin.numpy(), atol=1e-6)


@pytest.mark.nodevice
def test_cogview4_bad_head_dim() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        CogView4Transformer2DModel({**COGVIEW4_TINY, "attention_head_dim": 6})
