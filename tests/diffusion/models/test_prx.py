"""The PRX transformer against diffusers' PRXTransformer2DModel on torch CPU (tiny, random):
float32 on a latent grid no tile divides with a padded text, float16, and PRX-7B's form (the
latent size embedded, a bottleneck patch projection)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from prx_tiny import PRX_TINY, tiny_prx_transformer
from sd_tiny import state_dict
from support import assert_close

import gpucore
import gpustd
from diffusion.models.prx import PRXTransformer2DModel, patches, unpatched

H, W, TEXT, KEPT = 6, 14, 11, 7  # 3 x 7 patches; the first prompt's last 4 tokens padding


def _inputs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    latents = rng.standard_normal((2, PRX_TINY["in_channels"], H, W)).astype(np.float32)
    text = 2 * rng.standard_normal((2, TEXT, PRX_TINY["context_in_dim"])).astype(np.float32)
    mask = np.ones((2, TEXT), bool)
    mask[0, KEPT:] = False
    return latents, text, mask


def _reference(model: object, latents: np.ndarray, text: np.ndarray, mask: np.ndarray,
               t: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(latents), torch.from_numpy(t),  # type: ignore[operator]
                     torch.from_numpy(text), torch.from_numpy(mask)).sample.numpy()


def _ours(model: PRXTransformer2DModel, latents: np.ndarray, text: np.ndarray,
          mask: np.ndarray, t: np.ndarray, device: gpucore.Device) -> np.ndarray:
    p = model.config["patch_size"]
    tokens = patches(latents, p)
    out = model(gpustd.asarray(tokens, dtype=model.dtype, device=device),
                gpustd.asarray(text, dtype=model.dtype, device=device), t,
                model.rotary(H, W, TEXT), model.key_mask(mask, tokens.shape[1], device),
                size=(H, W))
    return unpatched(out.numpy().astype(np.float32), p, H, W)


def _ported(reference: object, device: gpucore.Device, dtype: type = np.float32
            ) -> PRXTransformer2DModel:
    ours = PRXTransformer2DModel(dict(reference.config), dtype=dtype,  # type: ignore[attr-defined]
                                 device=device)
    ours.load_state_dict(state_dict(reference))
    return ours


def test_prx_transformer(first_device: gpucore.Device) -> None:
    """float32 against diffusers; the text (and its padding mask) visibly matters."""
    reference = tiny_prx_transformer()
    ours = _ported(reference, first_device)
    latents, text, mask = _inputs(np.random.default_rng(3))
    t = np.array([0.83, 0.25], np.float32)
    expected = _reference(reference, latents, text, mask, t)
    # measured on lavapipe: 1.8e-5 (2.6e-6 at t = 0): the timestep's sinusoid turns by up to
    # 830 rad, where torch's float32 embedding and ours differ by 3e-5 (an ulp of the angle)
    assert_close(_ours(ours, latents, text, mask, t, first_device), expected, tol=3e-5)
    other = _reference(reference, latents, text[::-1].copy(), mask, t)
    assert np.abs(other - expected).mean() > 0.05 * np.abs(expected).mean()
    unmasked = _reference(reference, latents, text, np.ones_like(mask), t)
    assert np.abs(unmasked - expected)[0].mean() > 0.05 * np.abs(expected[0]).mean()


def test_prx_transformer_f16(f16_device: gpucore.Device) -> None:
    """float16 weights and activations against the float32 reference."""
    reference = tiny_prx_transformer()
    ours = _ported(reference, f16_device, np.float16)
    latents, text, mask = _inputs(np.random.default_rng(4))
    t = np.array([0.5, 0.97], np.float32)
    # measured on lavapipe: 6.2e-3 (float16 rounding through every block)
    assert_close(_ours(ours, latents, text, mask, t, f16_device),
                 _reference(reference, latents, text, mask, t), tol=1e-2)


def test_prx7b_form(first_device: gpucore.Device) -> None:
    """PRX-7B's options: the latent's size embedded into the conditioning, a bottleneck
    before the blocks; the size visibly matters."""
    reference = tiny_prx_transformer(resolution_embeds=True, bottleneck_size=24)
    ours = _ported(reference, first_device)
    latents, text, mask = _inputs(np.random.default_rng(5))
    t = np.array([0.6, 0.1], np.float32)
    expected = _reference(reference, latents, text, mask, t)
    # measured on lavapipe: 6.7e-6
    assert_close(_ours(ours, latents, text, mask, t, first_device), expected, tol=3e-5)
    plain = _ported(tiny_prx_transformer(bottleneck_size=24), first_device)
    assert np.abs(_ours(plain, latents, text, mask, t, first_device) - expected).mean() > (
        0.05 * np.abs(expected).mean())


@pytest.mark.nodevice
def test_prx_config_refused() -> None:
    with pytest.raises(ValueError, match="axes_dim"):
        PRXTransformer2DModel({**PRX_TINY, "axes_dim": [4, 4]}, device=None)
