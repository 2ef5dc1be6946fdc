"""The Wan 2.1 video VAE against diffusers' AutoencoderKLWan on torch CPU (tiny random
weights, 5 frames, sizes that are not tile multiples)."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from sd_tiny import ported
from support import assert_close
from wan_tiny import WAN22_VAE_TINY, WAN_VAE_TINY, tiny_wan22_vae, tiny_wan_vae

import gpucore
from diffusion.models import wan_vae_blocks
from diffusion.models.wan_vae import AutoencoderKLWan
from gpustd import asarray

TOL = 1e-3


def _ours(device: gpucore.Device) -> tuple[torch.nn.Module, AutoencoderKLWan]:
    reference = tiny_wan_vae()
    return reference, ported(AutoencoderKLWan, reference, device)


def test_decode_equals_diffusers(device: gpucore.Device) -> None:
    reference, ours = _ours(device)
    rng = np.random.default_rng(3)
    latents = rng.standard_normal((1, WAN_VAE_TINY["z_dim"], 2, 3, 5)).astype(np.float32)
    with torch.no_grad():
        expected = reference.decode(torch.from_numpy(latents)).sample.numpy()
    blocks = wan_vae_blocks.CausalConv3d
    with (mock.patch.object(wan_vae_blocks, "take_slice", wraps=wan_vae_blocks.take_slice)
          as sliced, mock.patch.object(blocks, "remember", autospec=True,
                                       side_effect=blocks.remember) as kept):
        got = ours.decode(asarray(latents, device=device)).numpy()
    # the temporal taps read their frames in place: frames are sliced only to keep a chunk's
    # last ones for the next
    assert sum(c.args[0].ndim == 4 for c in sliced.call_args_list) == kept.call_count > 0
    assert got.shape == (1, 3, 5, 24, 40)
    assert np.abs(got).max() <= 1.0 and np.abs(got).mean() > 0.05  # clamped, not all zero
    # the frames differ: the temporal convolutions and the frame doubling matter
    assert np.abs(got[:, :, 1] - got[:, :, 2]).mean() > 0.01
    assert_close(got, expected, tol=TOL)


def test_encode_equals_diffusers(device: gpucore.Device) -> None:
    reference, ours = _ours(device)
    rng = np.random.default_rng(4)
    pixels = rng.uniform(-1, 1, (2, 3, 5, 24, 16)).astype(np.float32)
    with torch.no_grad():
        posterior = reference.encode(torch.from_numpy(pixels)).latent_dist
    mean, logvar = ours.encode(asarray(pixels, device=device))
    assert mean.shape == (2, 4, 2, 3, 2)
    assert_close(mean.numpy(), posterior.mean.numpy(), tol=TOL)
    assert_close(logvar.numpy(), posterior.logvar.numpy(), tol=TOL)


def test_latent_normalization(device: gpucore.Device) -> None:
    _, ours = _ours(device)
    z = np.random.default_rng(5).standard_normal((1, 4, 2, 3, 2)).astype(np.float32)
    mean = np.asarray(WAN_VAE_TINY["latents_mean"], np.float32).reshape(1, -1, 1, 1, 1)
    std = np.asarray(WAN_VAE_TINY["latents_std"], np.float32).reshape(1, -1, 1, 1, 1)
    normalized = ours.normalize(asarray(z, device=device))
    assert_close(normalized.numpy(), (z - mean) / std, tol=1e-5)
    assert_close(ours.denormalize(normalized).numpy(), z, tol=1e-5)


def test_wan22_vae_equals_diffusers(device: gpucore.Device) -> None:
    """Wan 2.2's layout: 2x2 patches, residual down/up blocks (their reshuffle shortcuts,
    the first chunk's dropped frame), 16x smaller latents."""
    reference = tiny_wan22_vae()
    ours = ported(AutoencoderKLWan, reference, device)
    assert ours.spatial_factor == 16
    rng = np.random.default_rng(6)
    latents = rng.standard_normal((1, WAN22_VAE_TINY["z_dim"], 2, 2, 3)).astype(np.float32)
    pixels = rng.uniform(-1, 1, (1, 3, 5, 32, 48)).astype(np.float32)
    with torch.no_grad():
        expected = reference.decode(torch.from_numpy(latents)).sample.numpy()
        posterior = reference.encode(torch.from_numpy(pixels)).latent_dist
    got = ours.decode(asarray(latents, device=device)).numpy()
    assert got.shape == (1, 3, 5, 32, 48) and np.abs(got).mean() > 0.05
    assert_close(got, expected, tol=TOL)
    mean, logvar = ours.encode(asarray(pixels, device=device))
    assert_close(mean.numpy(), posterior.mean.numpy(), tol=TOL)
    assert_close(logvar.numpy(), posterior.logvar.numpy(), tol=TOL)


@pytest.mark.nodevice
def test_bad_configs_get_one_line() -> None:
    with pytest.raises(ValueError, match="is_residual"):
        AutoencoderKLWan({**WAN_VAE_TINY, "is_residual": True})
    with pytest.raises(ValueError, match="latents_mean"):
        AutoencoderKLWan({**WAN_VAE_TINY, "latents_mean": [0.0]})


def test_decode_f16(f16_device: gpucore.Device) -> None:
    reference = tiny_wan_vae()
    ours = ported(AutoencoderKLWan, reference, f16_device, dtype=np.float16)
    latents = np.random.default_rng(7).standard_normal((1, 4, 2, 2, 3)).astype(np.float32)
    with torch.no_grad():
        expected = reference.decode(torch.from_numpy(latents)).sample.numpy()
    got = ours.decode(asarray(latents, dtype=np.float16, device=f16_device)).numpy()
    assert got.dtype == np.float16
    assert_close(got.astype(np.float32), expected, tol=2e-2)


@pytest.mark.parametrize("wan22", [False, True], ids=["wan21", "wan22"])
def test_replayed_decode_is_eager_bitwise(device: gpucore.Device, wan22: bool) -> None:
    """From the third latent frame on the decode replays the third's recording: the same
    frames, bit for bit, as every chunk run eagerly (5 latent frames: two replays)."""
    reference = tiny_wan22_vae() if wan22 else tiny_wan_vae()
    ours = ported(AutoencoderKLWan, reference, device)
    z_dim = reference.config["z_dim"]
    latents = asarray(np.random.default_rng(8).standard_normal((1, z_dim, 5, 2, 3))
                      .astype(np.float32), device=device)
    eager = ours.decode(latents, replay=False).numpy()
    with mock.patch.object(gpucore.Capture, "replay", autospec=True,
                           side_effect=gpucore.Capture.replay) as replays:
        replayed = ours.decode(latents).numpy()
    assert replays.call_count == 2
    assert eager.shape[2] == 17 and np.abs(eager[:, :, 13:]).mean() > 0.05
    # the replayed chunks differ from one another: they read new latents and kept frames
    assert np.abs(eager[:, :, 13:] - eager[:, :, 9:13]).mean() > 0.01
    np.testing.assert_array_equal(replayed, eager)
    with torch.no_grad():
        expected = reference.decode(torch.from_numpy(latents.numpy())).sample.numpy()
    assert_close(replayed, expected, tol=TOL)
