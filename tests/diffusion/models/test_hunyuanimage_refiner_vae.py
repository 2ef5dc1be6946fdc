"""HunyuanImage 2.1 refiner's VAE against diffusers' AutoencoderKLHunyuanImageRefiner on
torch CPU (tiny random weights, 8x compression, a 24x40 picture as one frame): decode, the
posterior's moments and a sample; several frames refused in one line."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from hunyuanimage_refiner_tiny import tiny_refiner_vae
from sd_tiny import ported
from support import assert_close

import gpucore
from diffusion.models.hunyuanimage_refiner_vae import AutoencoderKLHunyuanImageRefiner
from gpustd import asarray

TOL = 1e-5  # measured worst |error| / (|e| + rms): 4.4e-6 (decode), 2.0e-6 (encode)


def test_refiner_vae_equals_diffusers(device: gpucore.Device) -> None:
    reference = tiny_refiner_vae()
    ours = ported(AutoencoderKLHunyuanImageRefiner, reference, device)
    rng = np.random.default_rng(8)
    latents = rng.standard_normal((2, 4, 1, 3, 5)).astype(np.float32)
    got = ours.decode(asarray(latents, device=device)).numpy()
    assert got.shape == (2, 3, 1, 24, 40) and np.abs(got).mean() > 0.1
    with torch.no_grad():
        expected = reference.decode(torch.from_numpy(latents)).sample.numpy()
    assert_close(got, expected, tol=TOL)
    pixels = rng.uniform(-1, 1, (2, 3, 1, 24, 40)).astype(np.float32)
    with torch.no_grad():
        posterior = reference.encode(torch.from_numpy(pixels)).latent_dist
    mean, logvar = ours.moments(asarray(pixels, device=device))
    assert mean.shape == (2, 4, 1, 3, 5)
    assert np.abs(np.diff(mean.numpy(), axis=0)).mean() > 0.1  # the pictures matter
    assert_close(mean.numpy(), posterior.mean.numpy(), tol=TOL)
    assert_close(logvar.numpy(), posterior.logvar.numpy(), tol=TOL)
    noise = rng.standard_normal(mean.shape).astype(np.float32)
    sample = posterior.mean.numpy() + posterior.std.numpy() * noise
    assert_close(ours.encode(asarray(pixels, device=device), noise=noise).numpy(), sample,
                 tol=TOL)
    with pytest.raises(ValueError, match="codes single pictures: give pictures of 1 frame"):
        ours.encode(asarray(np.zeros((1, 3, 5, 8, 8), np.float32), device=device))
