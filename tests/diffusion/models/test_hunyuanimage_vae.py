"""HunyuanImage 2.1's VAE against diffusers' AutoencoderKLHunyuanImage on torch CPU (tiny
random weights: three levels, 4x compression, down- and up-samplers that change the width
and keep it; sizes that are multiples of the compression only), and the shuffles against
torch's reshapes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import diffusers
import torch
from sd_tiny import ported, randomized
from support import assert_close

import gpucore
from diffusion.models.hunyuanimage_vae import (
    AutoencoderKLHunyuanImage,
    repeat_channels,
    shuffle,
    unshuffle,
)
from gpustd import asarray

TINY: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(32, 64, 64),
    layers_per_block=1, spatial_compression_ratio=4, sample_size=64, scaling_factor=0.75)
TOL = 2e-5  # measured worst |error| / (|e| + rms): 3.2e-6 (decode), 2.4e-6 (encode)


def _ours(device: gpucore.Device) -> tuple[Any, AutoencoderKLHunyuanImage]:
    reference = randomized(diffusers.AutoencoderKLHunyuanImage(**TINY), 5)
    return reference, ported(AutoencoderKLHunyuanImage, reference, device)


def test_decode_equals_diffusers(device: gpucore.Device) -> None:
    reference, ours = _ours(device)
    latents = np.random.default_rng(3).standard_normal((2, 8, 3, 5)).astype(np.float32)
    with torch.no_grad():
        expected = reference.decode(torch.from_numpy(latents)).sample.numpy()
    got = ours.decode(asarray(latents, device=device)).numpy()
    assert got.shape == (2, 3, 12, 20)
    assert np.abs(expected[0] - expected[1]).mean() > 0.1 * np.abs(expected).mean()
    assert_close(got, expected, tol=TOL)


def test_encode_equals_diffusers(device: gpucore.Device) -> None:
    reference, ours = _ours(device)
    pixels = np.random.default_rng(4).uniform(-1, 1, (2, 3, 16, 12)).astype(np.float32)
    with torch.no_grad():
        posterior = reference.encode(torch.from_numpy(pixels)).latent_dist
    mean, logvar = ours.encode(asarray(pixels, device=device))
    expected = posterior.mean.numpy()
    assert mean.shape == (2, 8, 4, 3)
    assert np.abs(expected[0] - expected[1]).mean() > 0.1 * np.abs(expected).mean()
    assert_close(mean.numpy(), expected, tol=TOL)
    assert_close(logvar.numpy(), posterior.logvar.numpy(), tol=TOL)


def test_shuffles_equal_torch(device: gpucore.Device) -> None:
    x = np.random.default_rng(6).standard_normal((2, 8, 4, 6)).astype(np.float32)
    t = torch.from_numpy(x)
    down = t.reshape(2, 8, 2, 2, 3, 2).permute(0, 3, 5, 1, 2, 4).reshape(2, 32, 2, 3)
    up = t.reshape(2, 2, 2, 2, 4, 6).permute(0, 3, 4, 1, 5, 2).reshape(2, 2, 8, 12)
    on = asarray(x, device=device)
    np.testing.assert_array_equal(unshuffle(on).numpy(), down.numpy())
    np.testing.assert_array_equal(shuffle(on).numpy(), up.numpy())
    np.testing.assert_array_equal(repeat_channels(on, 3).numpy(),
                                  t.repeat_interleave(3, dim=1).numpy())


@pytest.mark.nodevice
def test_bad_inputs_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="multiple of twice latent_channels"):
        AutoencoderKLHunyuanImage({**TINY, "latent_channels": 48})
    with pytest.raises(ValueError, match="power of 2"):
        AutoencoderKLHunyuanImage({**TINY, "spatial_compression_ratio": 8})
