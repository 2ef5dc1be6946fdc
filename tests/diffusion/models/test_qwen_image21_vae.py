"""The Qwen-Image 2.1 VAE on one picture against diffusers' AutoencoderKLQwenImage21 on torch
CPU (tiny random weights: three levels, one temporal, a decoder wider than the encoder; sizes
that are multiples of the compression, not of a tile), and its latents' normalization against
QwenImage21Pipeline's formulas."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import diffusers
import torch
from sd_tiny import ported, randomized
from support import assert_close

import gpucore
from diffusion.models import qwen_image21_vae
from diffusion.models.qwen_image21_vae import AutoencoderKLQwenImage21
from gpustd import asarray

TINY: dict[str, Any] = dict(
    base_dim=8, decoder_base_dim=12, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1,
    temperal_downsample=[False, True], latents_mean=[0.3, -0.2, 0.1, 0.5],
    latents_std=[1.5, 0.8, 2.0, 1.1])
TOL = 5e-5  # measured worst |error| / (|e| + rms): 4.3e-6 (decode), 2.0e-6 (encode's mean)


def _ours(device: gpucore.Device, **options: Any) -> tuple[Any, AutoencoderKLQwenImage21]:
    reference = randomized(diffusers.AutoencoderKLQwenImage21(**TINY), 5)
    return reference, ported(AutoencoderKLQwenImage21, reference, device, **options)


def test_decode_equals_diffusers(device: gpucore.Device) -> None:
    reference, ours = _ours(device)
    rng = np.random.default_rng(3)
    latents = rng.standard_normal((2, TINY["z_dim"], 5, 7)).astype(np.float32)
    with torch.no_grad():
        expected = reference.decode(torch.from_numpy(latents)[:, :, None]).sample[:, :, 0]
    got = ours.decode(asarray(latents, device=device)).numpy()
    assert got.shape == (2, 4, 20, 28)
    # mostly inside the clamp, and each picture its own latents' (the batch runs one by one)
    assert np.mean(np.abs(got) < 1) > 0.5 and np.abs(got[0] - got[1]).mean() > 0.05
    assert_close(got, expected.numpy(), tol=TOL)


def test_encode_equals_diffusers(device: gpucore.Device) -> None:
    reference, ours = _ours(device)
    pixels = np.random.default_rng(4).uniform(-1, 1, (2, 4, 24, 36)).astype(np.float32)
    with torch.no_grad():
        posterior = reference.encode(torch.from_numpy(pixels)[:, :, None]).latent_dist
    mean, logvar = ours.encode(asarray(pixels, device=device))
    expected = posterior.mean[:, :, 0].numpy()
    assert mean.shape == (2, TINY["z_dim"], 6, 9)
    assert np.abs(expected[0] - expected[1]).mean() > 0.1 * np.abs(expected).mean()
    assert_close(mean.numpy(), expected, tol=TOL)
    assert_close(logvar.numpy(), posterior.logvar[:, :, 0].numpy(), tol=TOL)


def test_latent_normalization_as_the_pipeline(device: gpucore.Device) -> None:
    """QwenImage21Pipeline: `(z - mean) / std` after encoding, `z * std + mean` before
    decoding, mean and std viewed (1, z_dim, 1, 1, 1) over (B, z_dim, 1, h, w)."""
    _, ours = _ours(device)
    z = np.random.default_rng(5).standard_normal((2, 4, 3, 5)).astype(np.float32)
    mean = torch.tensor(TINY["latents_mean"]).view(1, 4, 1, 1, 1)
    std = torch.tensor(TINY["latents_std"]).view(1, 4, 1, 1, 1)
    frames = torch.from_numpy(z)[:, :, None]
    normalized = ours.normalize(asarray(z, device=device)).numpy()
    assert_close(normalized, ((frames - mean) / std)[:, :, 0].numpy(), tol=1e-6)
    denormalized = ours.denormalize(asarray(z, device=device)).numpy()
    assert_close(denormalized, (frames * std + mean)[:, :, 0].numpy(), tol=1e-6)
    assert np.abs(denormalized - z).mean() > 0.3  # the statistics visibly apply


@pytest.mark.nodevice
def test_defaults_are_the_released_config() -> None:
    """Our defaults for what a config.json leaves out are diffusers' (the released VAE's)."""
    signature = inspect.signature(diffusers.AutoencoderKLQwenImage21.__init__).parameters
    for key, value in qwen_image21_vae._DEFAULTS.items():
        default = signature[key].default
        assert (list(value) if isinstance(value, tuple) else value) == default, key


@pytest.mark.nodevice
def test_bad_configs_get_one_line() -> None:
    with pytest.raises(ValueError, match="attn_scales"):
        AutoencoderKLQwenImage21({**TINY, "attn_scales": [0.5]})
    with pytest.raises(ValueError, match="latents_mean"):
        AutoencoderKLQwenImage21({**TINY, "latents_mean": [0.0]})
    with pytest.raises(ValueError, match="patch_size"):
        AutoencoderKLQwenImage21({**TINY, "patch_size": 2})
    with pytest.raises(ValueError, match="is_residual False"):
        AutoencoderKLQwenImage21({**TINY, "is_residual": False})


def test_bad_shapes_get_one_line(device: gpucore.Device) -> None:
    ours = AutoencoderKLQwenImage21(TINY, device=device)
    with pytest.raises(ValueError, match=r"\(batch, 4, height, width\) with height and width "
                                         "multiples of 4"):
        ours.encode(asarray(np.zeros((1, 3, 8, 8), np.float32), device=device))  # RGB
    with pytest.raises(ValueError, match="multiples of 4"):
        ours.encode(asarray(np.zeros((1, 4, 8, 10), np.float32), device=device))
    with pytest.raises(ValueError, match=r"latents must be \(batch, 4, height, width\)"):
        ours.decode(asarray(np.zeros((1, 4, 1, 2, 2), np.float32), device=device))


def test_decode_f16(f16_device: gpucore.Device) -> None:
    reference, ours = _ours(f16_device, dtype=np.float16)
    latents = np.random.default_rng(6).standard_normal((1, 4, 3, 5)).astype(np.float32)
    with torch.no_grad():
        expected = reference.decode(torch.from_numpy(latents)[:, :, None]).sample[:, :, 0]
    got = ours.decode(asarray(latents, dtype=np.float16, device=f16_device)).numpy()
    assert got.dtype == np.float16
    assert_close(got.astype(np.float32), expected.numpy(), tol=2e-2)  # measured 6.4e-3
