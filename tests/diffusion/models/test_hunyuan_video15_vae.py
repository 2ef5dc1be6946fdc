"""The HunyuanVideo 1.5 VAE against diffusers' AutoencoderKLHunyuanVideo15 on torch CPU
(tiny random weights: 8x spatial and 4x temporal compression, 9 frames of 24x40 pixels, sizes
that are no tile multiples), whole and in diffusers' spatial tiles (tiny tiles), in float32
and float16, and its weights read from a diffusers folder."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from diffusers.models.autoencoders import autoencoder_kl_hunyuanvideo15 as hv15
from hunyuan_video15_vae_tiny import HUNYUAN_VIDEO15_VAE_TINY, tiny_hunyuan_video15_vae
from sd_tiny import ported
from support import assert_close

import gpucore
from diffusion.models.hunyuan_video15_vae import AutoencoderKLHunyuanVideo15
from gpustd import asarray

TOL = 2e-5


def _pair(device: gpucore.Device) -> tuple[torch.nn.Module, AutoencoderKLHunyuanVideo15]:
    reference = tiny_hunyuan_video15_vae()
    return reference, ported(AutoencoderKLHunyuanVideo15, reference, device)


def _decoded(model: torch.nn.Module, latents: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.decode(torch.from_numpy(latents)).sample.numpy()


def test_decode_equals_diffusers(device: gpucore.Device) -> None:
    reference, ours = _pair(device)
    latents = np.random.default_rng(3).standard_normal((1, 4, 3, 3, 5)).astype(np.float32)
    got = ours.decode(asarray(latents, device=device)).numpy()
    assert got.shape == (1, 3, 9, 24, 40) and np.abs(got).mean() > 0.1
    assert np.abs(got[:, :, 1] - got[:, :, 2]).mean() > 0.02  # the frames differ
    expected = _decoded(reference, latents)
    print("decode err", np.abs(got - expected).max())
    assert_close(got, expected, tol=TOL)
    # the attention's frame-causal mask matters: without it diffusers' frames differ
    unmasked = mock.patch.object(
        hv15.HunyuanVideo15AttnBlock, "prepare_causal_attention_mask",
        side_effect=lambda frames, pixels, dtype, device, batch_size: torch.zeros(
            batch_size, frames * pixels, frames * pixels))
    with unmasked:
        assert np.abs(_decoded(reference, latents) - got).max() > 0.01


def test_encode_equals_diffusers(device: gpucore.Device) -> None:
    reference, ours = _pair(device)
    reference.use_slicing = True  # diffusers' causal mask breaks a batch of 2 otherwise
    rng = np.random.default_rng(4)
    pixels = rng.uniform(-1, 1, (2, 3, 9, 24, 40)).astype(np.float32)
    with torch.no_grad():
        posterior = reference.encode(torch.from_numpy(pixels)).latent_dist
    video = asarray(pixels, device=device)
    mean, logvar = ours.moments(video)
    assert mean.shape == (2, 4, 3, 3, 5)
    print("encode err", np.abs(mean.numpy() - posterior.mean.numpy()).max(), np.abs(logvar.numpy() - posterior.logvar.numpy()).max())
    assert_close(mean.numpy(), posterior.mean.numpy(), tol=TOL)
    assert_close(logvar.numpy(), posterior.logvar.numpy(), tol=TOL)
    noise = rng.standard_normal(mean.shape).astype(np.float32)
    expected = posterior.mean.numpy() + posterior.std.numpy() * noise
    assert_close(ours.encode(video, noise=noise).numpy(), expected, tol=TOL)
