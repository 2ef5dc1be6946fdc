"""The Qwen-Image VAE on one frame against diffusers' AutoencoderKLQwenImage on torch CPU
(tiny random weights, sizes that are not tile multiples)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from qwenimage_tiny import QWENIMAGE_VAE_TINY, tiny_qwenimage_vae
from sd_tiny import ported
from support import assert_close

import gpucore
from diffusion.models.qwen_image_vae import AutoencoderKLQwenImage
from gpustd import asarray

TOL = 1e-3


def _ours(device: gpucore.Device) -> tuple[torch.nn.Module, AutoencoderKLQwenImage]:
    reference = tiny_qwenimage_vae()
    return reference, ported(AutoencoderKLQwenImage, reference, device)


def test_decode_equals_diffusers(device: gpucore.Device) -> None:
    reference, ours = _ours(device)
    rng = np.random.default_rng(3)
    latents = rng.standard_normal((2, QWENIMAGE_VAE_TINY["z_dim"], 5, 7)).astype(np.float32)
    with torch.no_grad():
        expected = reference.decode(torch.from_numpy(latents)[:, :, None]).sample[:, :, 0]
    got = ours.decode(asarray(latents, device=device)).numpy()
    assert got.shape == (2, 3, 20, 28)
    assert np.abs(got).max() <= 1.0 and np.abs(got).mean() > 0.05  # clamped, not all zero
    assert_close(got, expected.numpy(), tol=TOL)


def test_encode_equals_diffusers(device: gpucore.Device) -> None:
    reference, ours = _ours(device)
    rng = np.random.default_rng(4)
    pixels = rng.uniform(-1, 1, (1, 3, 24, 36)).astype(np.float32)
    with torch.no_grad():
        posterior = reference.encode(torch.from_numpy(pixels)[:, :, None]).latent_dist
    mean, logvar = ours.encode(asarray(pixels, device=device))
    assert_close(mean.numpy(), posterior.mean[:, :, 0].numpy(), tol=TOL)
    assert_close(logvar.numpy(), posterior.logvar[:, :, 0].numpy(), tol=TOL)


def test_latent_normalization(device: gpucore.Device) -> None:
    _, ours = _ours(device)
    z = np.random.default_rng(5).standard_normal((1, 4, 3, 2)).astype(np.float32)
    mean = np.asarray(QWENIMAGE_VAE_TINY["latents_mean"], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(QWENIMAGE_VAE_TINY["latents_std"], np.float32).reshape(1, -1, 1, 1)
    normalized = ours.normalize(asarray(z, device=device))
    assert_close(normalized.numpy(), (z - mean) / std, tol=1e-5)
    assert_close(ours.denormalize(normalized).numpy(), z, tol=1e-5)


@pytest.mark.nodevice
def test_bad_configs_get_one_line() -> None:
    with pytest.raises(ValueError, match="attn_scales"):
        AutoencoderKLQwenImage({**QWENIMAGE_VAE_TINY, "attn_scales": [0.5]})
    with pytest.raises(ValueError, match="latents_mean"):
        AutoencoderKLQwenImage({**QWENIMAGE_VAE_TINY, "latents_mean": [0.0]})


def test_decode_f16(f16_device: gpucore.Device) -> None:
    reference = tiny_qwenimage_vae()
    ours = ported(AutoencoderKLQwenImage, reference, f16_device, dtype=np.float16)
    latents = np.random.default_rng(6).standard_normal((1, 4, 3, 5)).astype(np.float32)
    with torch.no_grad():
        expected = reference.decode(torch.from_numpy(latents)[:, :, None]).sample[:, :, 0]
    got = ours.decode(asarray(latents, dtype=np.float16, device=f16_device)).numpy()
    assert got.dtype == np.float16
    assert_close(got.astype(np.float32), expected.numpy(), tol=2e-2)
