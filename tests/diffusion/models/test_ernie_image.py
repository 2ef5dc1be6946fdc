"""The ERNIE-Image transformer against diffusers' ErnieImageTransformer2DModel on torch CPU
(tiny, random): float32 with an odd text length and a latent grid no tile divides, float16,
and the position ids against the ones diffusers builds."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from ernie_image_tiny import ERNIE_TINY, tiny_ernie_transformer
from sd_tiny import state_dict
from support import assert_close

import gpucore
import gpustd
from diffusion.models.ernie_image import ErnieImageTransformer2DModel, ernie_positions

ROWS, COLUMNS, TEXT = 3, 7, 11  # 21 latent patches, 11 text tokens


def _inputs(rng: np.random.Generator, batch: int = 2) -> tuple[np.ndarray, np.ndarray]:
    latents = rng.standard_normal((batch, ERNIE_TINY["in_channels"], ROWS, COLUMNS))
    text = 2 * rng.standard_normal((batch, TEXT, ERNIE_TINY["text_in_dim"]))
    return latents.astype(np.float32), text.astype(np.float32)


def _reference(model: object, latents: np.ndarray, text: np.ndarray, t: np.ndarray
               ) -> np.ndarray:
    lens = torch.full((len(text),), text.shape[1], dtype=torch.long)
    with torch.no_grad():
        return model(torch.from_numpy(latents), torch.from_numpy(t),  # type: ignore[operator]
                     torch.from_numpy(text), lens).sample.float().numpy()


def _ours(reference: object, device: gpucore.Device, dtype: object) -> object:
    ours = ErnieImageTransformer2DModel(dict(reference.config),  # type: ignore[attr-defined]
                                        dtype=dtype, device=device)
    ours.load_state_dict(state_dict(reference))
    return ours


def test_ernie_transformer(first_device: gpucore.Device) -> None:
    """float32 against diffusers; the text and the timestep visibly matter."""
    reference = tiny_ernie_transformer()
    ours = _ours(reference, first_device, np.float32)
    latents, text = _inputs(np.random.default_rng(3))
    t = np.array([830.0, 250.0], np.float32)
    expected = _reference(reference, latents, text, t)
    got = ours(gpustd.asarray(latents, device=first_device),  # type: ignore[operator]
               gpustd.asarray(text, device=first_device), t).numpy()
    # the worst element's |error| / (rms + |expected|) measured on lavapipe: 1.2e-6
    assert_close(got, expected, tol=1e-5)
    other = _reference(reference, latents, text[::-1].copy(), t)
    assert np.abs(other - expected).mean() > 0.05 * np.abs(expected).mean()
    later = _reference(reference, latents, text, t[::-1].copy())
    assert np.abs(later - expected).mean() > 0.05 * np.abs(expected).mean()


def test_ernie_transformer_f16(f16_device: gpucore.Device) -> None:
    """float16 weights and activations against diffusers in float16 (its timestep rounded to
    float16 as the pipeline passes it) run in float32."""
    reference = tiny_ernie_transformer()
    ours = _ours(reference, f16_device, np.float16)
    latents, text = _inputs(np.random.default_rng(4))
    t = np.array([500.3, 971.7], np.float32)
    expected = _reference(reference, latents, text, t.astype(np.float16).astype(np.float32))
    got = ours(gpustd.asarray(latents, dtype=np.float16, device=f16_device),  # type: ignore
               gpustd.asarray(text, dtype=np.float16, device=f16_device), t)
    assert got.dtype == np.float16
    # measured on lavapipe: 4.7e-3 (float16 rounding through every block)
    assert_close(got.numpy().astype(np.float32), expected, tol=1e-2)


@pytest.mark.nodevice
def test_ernie_positions_are_diffusers() -> None:
    """Image patches (text length, row, column) first, then text tokens (i, 0, 0), as the
    ids diffusers' forward builds for one prompt (read off its rotary embedding's input)."""
    seen: list[torch.Tensor] = []
    model = tiny_ernie_transformer()
    model.pos_embed.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    latents, text = _inputs(np.random.default_rng(5), batch=1)
    _reference(model, latents, text, np.array([10.0], np.float32))
    np.testing.assert_array_equal(ernie_positions(TEXT, ROWS, COLUMNS), seen[0][0].numpy())


def test_ernie_patch_size_refused(first_device: gpucore.Device) -> None:
    with pytest.raises(ValueError, match="patch_size 1"):
        ErnieImageTransformer2DModel({**ERNIE_TINY, "patch_size": 2}, device=first_device)
