"""The SkyReels V2 transformer against diffusers' SkyReelsV2Transformer3DModel on torch CPU:
a timestep per latent frame with the fps embedding and block-causal self-attention
(diffusion forcing), the image-to-video model, float16 (tiny random models whose weights are
scaled until the text, the image and the fps visibly matter)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from sd_tiny import state_dict
from skyreels_v2_tiny import SKYREELS_I2V_TINY, SKYREELS_TINY, tiny_skyreels_transformer
from support import assert_close

import gpucore
from diffusion.models.skyreels_v2 import SkyReelsV2Transformer3DModel
from gpustd import asarray

TOL = 1e-3


def _pair(device: gpucore.Device, config: dict | None = None, dtype=np.float32):
    reference = tiny_skyreels_transformer(*(() if config is None else (config, 25)))
    ours = SkyReelsV2Transformer3DModel(dict(reference.config), dtype=dtype, device=device)
    ours.load_state_dict(state_dict(reference))
    return reference, ours


def _reference(model, latents, timestep, text, **kw) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(latents), torch.from_numpy(timestep),
                     torch.from_numpy(text), **kw).sample.numpy()


def test_diffusion_forcing_equals_diffusers(device: gpucore.Device) -> None:
    """Per-frame timesteps, fps, causal blocks of 2 frames (4 latent frames, 3 x 5 patches:
    no tile multiple); each block sees only itself and the blocks before it."""
    reference, ours = _pair(device)
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((1, 4, 4, 6, 10)).astype(np.float32)
    text = rng.standard_normal((1, 7, SKYREELS_TINY["text_dim"])).astype(np.float32)
    steps = np.array([[0.0, 0.0, 480.5, 999.0]], np.float32)
    reference._set_ar_attention(2)
    expected = _reference(reference, latents, steps, text, enable_diffusion_forcing=True,
                          fps=[1])
    got = ours(asarray(latents, device=device), steps, asarray(text, device=device), fps=[1],
               causal_block_size=2).numpy()
    assert_close(got, expected, tol=TOL)
    # the fps and the text matter; the first block ignores the later ones
    fps16 = _reference(reference, latents, steps, text, enable_diffusion_forcing=True, fps=[0])
    assert np.abs(fps16 - expected).mean() > 0.05 * np.abs(expected).mean()
    other = _reference(reference, latents, steps, 2 * text, enable_diffusion_forcing=True,
                       fps=[1])
    assert np.abs(other - expected).mean() > 0.1 * np.abs(expected).mean()
    later = latents.copy()
    later[:, :, 2:] = rng.standard_normal(later[:, :, 2:].shape)
    moved = ours(asarray(later, device=device), steps, asarray(text, device=device), fps=[1],
                 causal_block_size=2).numpy()
    assert_close(moved[:, :, :2], got[:, :, :2], tol=TOL)
    assert np.abs(moved[:, :, 2:] - got[:, :, 2:]).mean() > 0.1
    reference._set_ar_attention(1)
    uniform = np.full((1, 4), 480.5, np.float32)
    expected = _reference(reference, latents, uniform, text, enable_diffusion_forcing=True,
                          fps=[0])
    got = ours(asarray(latents, device=device), uniform, asarray(text, device=device),
               fps=[0]).numpy()
    assert_close(got, expected, tol=TOL)
    with pytest.raises(ValueError, match="reads the video's fps"):
        ours(asarray(latents, device=device), steps, asarray(text, device=device))
    with pytest.raises(ValueError, match="not a multiple of the causal block"):
        ours(asarray(latents, device=device), steps, asarray(text, device=device), fps=[1],
             causal_block_size=3)


def test_image_to_video_equals_diffusers(first_device: gpucore.Device) -> None:
    """SkyReels V2 I2V: one timestep per video, the CLIP states through the image
    cross-attention, no fps."""
    reference, ours = _pair(first_device, SKYREELS_I2V_TINY)
    rng = np.random.default_rng(1)
    latents = rng.standard_normal((2, 12, 2, 4, 6)).astype(np.float32)
    text = rng.standard_normal((2, 512, SKYREELS_TINY["text_dim"])).astype(np.float32)
    image = rng.standard_normal((2, 5, SKYREELS_I2V_TINY["image_dim"])).astype(np.float32)
    steps = np.array([700.0, 250.5], np.float32)

    def expected_for(picture: np.ndarray) -> np.ndarray:
        return _reference(reference, latents, steps, text,
                          encoder_hidden_states_image=torch.from_numpy(picture))

    expected = expected_for(image)
    got = ours(asarray(latents, device=first_device), steps,
               asarray(text, device=first_device),
               encoder_hidden_states_image=asarray(image, device=first_device)).numpy()
    assert got.shape == (2, 4, 2, 4, 6)
    assert_close(got, expected, tol=TOL)
    other = 2 * rng.standard_normal(image.shape).astype(np.float32)
    assert np.abs(expected_for(other) - expected).mean() > 0.1 * np.abs(expected).mean()
    with pytest.raises(ValueError, match="reads no fps"):
        ours(asarray(latents, device=first_device), steps, asarray(text, device=first_device),
             encoder_hidden_states_image=asarray(image, device=first_device), fps=[1])


def test_diffusion_forcing_f16(f16_device: gpucore.Device) -> None:
    reference, ours = _pair(f16_device, dtype=np.float16)
    rng = np.random.default_rng(3)
    latents = rng.standard_normal((1, 4, 2, 4, 6)).astype(np.float32)
    text = rng.standard_normal((1, 5, SKYREELS_TINY["text_dim"])).astype(np.float32)
    steps = np.array([[100.0, 800.0]], np.float32)
    reference._set_ar_attention(1)
    expected = _reference(reference, latents, steps, text, enable_diffusion_forcing=True,
                          fps=[1])
    got = ours(asarray(latents, dtype=np.float16, device=f16_device), steps,
               asarray(text, dtype=np.float16, device=f16_device), fps=[1]).numpy()
    assert got.dtype == np.float16
    assert_close(got.astype(np.float32), expected, tol=2e-2)
