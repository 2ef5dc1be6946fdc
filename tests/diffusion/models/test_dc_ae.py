"""DC-AE (Sana's VAE) against diffusers' AutoencoderDC on torch CPU: tiny random weights with
every block kind of the f32c32 Sana VAE (tests/dc_ae_tiny.py), 4x compression, sizes that are
no tile multiples; a 2 x 2 latent takes diffusers' quadratic attention at the lowest level
(N <= attention_head_dim), larger ones the linear form; the pixel-shuffle layout as well."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import diffusers
import torch
from dc_ae_tiny import DC_AE_TINY, DC_AE_TINY_SHUFFLE, tiny_dc_ae
from sd_tiny import ported
from support import assert_close

import gpucore
from diffusion.loaders.sana import DC_AE_SANA_CONFIG
from diffusion.models.dc_ae import AutoencoderDC
from gpustd import asarray, nn

# measured worst |error| / (|e| + rms) on lavapipe: decode 4.1e-6 (the quadratic form 2.7e-6),
# encode 2.7e-6, the shuffle layout 1.4e-6 and 1.3e-6
TOL = 1e-5
# float16 against the float32 reference: decode 5.8e-3, encode 4.3e-3 (diffusers' own float16
# on torch CPU: 8.2e-3 and 5.8e-3)
TOL_F16 = 1.5e-2


def _decoded(reference: Any, latents: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return reference.decode(torch.from_numpy(latents)).sample.numpy()


def _encoded(reference: Any, pixels: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return reference.encode(torch.from_numpy(pixels)).latent.numpy()


def test_decode_equals_diffusers(device: gpucore.Device) -> None:
    reference = tiny_dc_ae()
    ours = ported(AutoencoderDC, reference, device)
    latents = np.random.default_rng(3).standard_normal((2, 8, 9, 11)).astype(np.float32)
    expected = _decoded(reference, latents)
    got = ours.decode(asarray(latents, device=device)).numpy()
    assert got.shape == (2, 3, 36, 44)
    assert np.abs(expected[0] - expected[1]).mean() > 0.1 * np.abs(expected).mean()
    assert_close(got, expected, tol=TOL)
    small = latents[:1, :, :2, :2].copy()  # 4 pixels <= head_dim 8: the quadratic form
    assert_close(ours.decode(asarray(small, device=device)).numpy(),
                 _decoded(reference, small), tol=TOL)


def test_encode_equals_diffusers(device: gpucore.Device) -> None:
    reference = tiny_dc_ae()
    ours = ported(AutoencoderDC, reference, device)
    pixels = np.random.default_rng(4).uniform(-1, 1, (2, 3, 36, 44)).astype(np.float32)
    expected = _encoded(reference, pixels)
    got = ours.encode(asarray(pixels, device=device)).numpy()
    assert got.shape == (2, 8, 9, 11)
    assert np.abs(expected[0] - expected[1]).mean() > 0.1 * np.abs(expected).mean()
    assert_close(got, expected, tol=TOL)


def test_attention_visibly_matters() -> None:
    """The tiny model's linear attention changes its output (so the tests above see it)."""
    reference = tiny_dc_ae()
    latents = np.random.default_rng(3).standard_normal((1, 8, 9, 11)).astype(np.float32)
    before = _decoded(reference, latents)
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if ".attn.to_out." in name:
                p.zero_()
    after = _decoded(reference, latents)
    assert np.abs(before - after).mean() > 0.05 * np.abs(before).mean()


def test_shuffle_layout_equals_diffusers(device: gpucore.Device) -> None:
    reference = tiny_dc_ae(**DC_AE_TINY_SHUFFLE)
    ours = ported(AutoencoderDC, reference, device)
    latents = np.random.default_rng(5).standard_normal((1, 8, 5, 7)).astype(np.float32)
    assert_close(ours.decode(asarray(latents, device=device)).numpy(),
                 _decoded(reference, latents), tol=TOL)
    pixels = np.random.default_rng(6).uniform(-1, 1, (1, 3, 20, 28)).astype(np.float32)
    assert_close(ours.encode(asarray(pixels, device=device)).numpy(),
                 _encoded(reference, pixels), tol=TOL)


def test_f16_equals_diffusers(f16_device: gpucore.Device) -> None:
    reference = tiny_dc_ae()
    ours = ported(AutoencoderDC, reference, f16_device, dtype=np.float16)
    latents = np.random.default_rng(7).standard_normal((1, 8, 9, 11)).astype(np.float32)
    got = ours.decode(asarray(latents, dtype=np.float16, device=f16_device)).numpy()
    assert got.dtype == np.float16
    assert_close(got.astype(np.float32), _decoded(reference, latents), tol=TOL_F16)
    pixels = np.random.default_rng(8).uniform(-1, 1, (1, 3, 36, 44)).astype(np.float32)
    got = ours.encode(asarray(pixels, dtype=np.float16, device=f16_device)).numpy()
    assert_close(got.astype(np.float32), _encoded(reference, pixels), tol=TOL_F16)


def test_bad_input_refused_in_one_line(device: gpucore.Device) -> None:
    ours = AutoencoderDC(DC_AE_TINY, device=device)
    with pytest.raises(ValueError, match=r"multiples of 4, got \(1, 3, 30, 32\)"):
        ours.encode(asarray(np.zeros((1, 3, 30, 32), np.float32), device=device))
    with pytest.raises(ValueError, match=r"expected \(B, 8, H, W\)"):
        ours.decode(asarray(np.zeros((1, 4, 3, 3), np.float32), device=device))


def test_sanas_config_builds_diffusers_tensors(first_device: gpucore.Device) -> None:
    """The config a loaded file is given (Sana's f32c32) builds diffusers' tensors, every name
    and shape (ours deferred, diffusers' on the meta device: no weights drawn)."""
    config = {k: v for k, v in DC_AE_SANA_CONFIG.items() if not k.startswith("_")}
    with torch.device("meta"):
        reference = diffusers.AutoencoderDC(**config)
    with nn.deferred():
        ours = AutoencoderDC(config, device=first_device)
    assert {k: tuple(v.shape) for k, v in ours.named_parameters()} == {
        k: tuple(v.shape) for k, v in reference.state_dict().items()}


@pytest.mark.nodevice
def test_bad_configs_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="decoder norm 'batch_norm' is not supported"):
        AutoencoderDC({**DC_AE_TINY, "decoder_norm_types": "batch_norm"})
    with pytest.raises(ValueError, match="upsample_block_type 'bilinear'"):
        AutoencoderDC({**DC_AE_TINY, "upsample_block_type": "bilinear"})
    with pytest.raises(ValueError, match="2 entries for 3 levels"):
        AutoencoderDC({**DC_AE_TINY, "encoder_layers_per_block": (1, 1)})
    with pytest.raises(ValueError, match="do not split into heads"):
        AutoencoderDC({**DC_AE_TINY, "attention_head_dim": 12})
