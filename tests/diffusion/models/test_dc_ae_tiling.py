"""DC-AE tiled decode and encode against diffusers' AutoencoderDC with `enable_tiling` on torch
CPU (the tiny random DC-AE, 4x compression; tiles of 16 pixels every 12, so that a 24 x 28
picture takes 2 x 3 tiles, the last ones short), and the tiles visibly change the result;
the largest tensor a pass makes, as needs_tiling reckons it, against the allocations seen."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from dc_ae_tiny import DC_AE_TINY, DC_AE_TINY_SHUFFLE, tiny_dc_ae
from sd_tiny import ported
from support import assert_close

import gpucore
from diffusion.models.dc_ae import AutoencoderDC
from diffusion.models.dc_ae_tiling import (
    bytes_per_input_pixel,
    decode_tiled,
    encode_tiled,
    needs_tiling,
)
from gpustd import asarray

TILE, STRIDE = 16, 12
TOL = 1e-5  # measured worst |error| / (|e| + rms) on lavapipe: decode 3.9e-6, encode 1.6e-6


def test_tiled_equals_diffusers(device: gpucore.Device) -> None:
    reference = tiny_dc_ae()
    ours = ported(AutoencoderDC, reference, device)
    latents = np.random.default_rng(9).standard_normal((1, 8, 6, 7)).astype(np.float32)
    pixels = np.random.default_rng(10).uniform(-1, 1, (1, 3, 24, 28)).astype(np.float32)
    with torch.no_grad():
        whole = reference.decode(torch.from_numpy(latents)).sample.numpy()
        reference.enable_tiling(TILE, TILE, STRIDE, STRIDE)
        decoded = reference.decode(torch.from_numpy(latents)).sample.numpy()
        encoded = reference.encode(torch.from_numpy(pixels)).latent.numpy()
    assert np.abs(decoded - whole).mean() > 0.1 * np.abs(whole).mean()  # measured 0.77
    got = decode_tiled(ours, asarray(latents, device=device), tile=TILE, stride=STRIDE)
    assert_close(got, decoded, tol=TOL)
    assert_close(encode_tiled(ours, pixels, tile=TILE, stride=STRIDE), encoded, tol=TOL)


# the top level widest (its channels), the EfficientViT levels (their float32 q, k, v), the
# pixel-shuffle layout's empty top level
_WIDE = dict(DC_AE_TINY, encoder_block_out_channels=(64, 16, 32),
             decoder_block_out_channels=(64, 16, 32))


@pytest.mark.parametrize("config", [DC_AE_TINY, DC_AE_TINY_SHUFFLE, _WIDE],
                         ids=["sana", "shuffle", "wide-top"])
def test_largest_tensor_as_reckoned(device: gpucore.Device, monkeypatch: pytest.MonkeyPatch,
                                    config: dict[str, Any]) -> None:
    sizes: list[int] = []
    allocate = device.allocate

    def recorded(nbytes: int, usage: int, label: str, exact: bool = False) -> object:
        sizes.append(nbytes)
        return allocate(nbytes, usage, label, exact)

    vae = AutoencoderDC(config, device=device)  # uninitialised weights: sizes alone matter
    monkeypatch.setattr(device, "allocate", recorded)
    # pictures whose activations outgrow the weights (a CPU adapter's convs copy theirs)
    vae.decode(asarray(np.zeros((1, 8, 16, 16), np.float32), device=device)).numpy()
    assert max(sizes) == 256 * bytes_per_input_pixel(config, "decode", 4)
    sizes.clear()
    vae.encode(asarray(np.zeros((1, 3, 64, 64), np.float32), device=device)).numpy()
    assert max(sizes) == 4096 * bytes_per_input_pixel(config, "encode", 4)
    limit = min(device.limits["max-storage-buffer-binding-size"], device.limits["max-buffer-size"])
    side = int((limit / bytes_per_input_pixel(config, "decode", 4)) ** 0.5) + 1
    assert needs_tiling(vae, (1, 8, side, side)) and not needs_tiling(vae, (1, 8, 8, 8))


@pytest.mark.nodevice
def test_bad_tiles_refused_in_one_line() -> None:
    vae = AutoencoderDC(DC_AE_TINY)
    with pytest.raises(ValueError, match="multiples of 4 pixels"):
        decode_tiled(vae, np.zeros((1, 8, 2, 2), np.float32), tile=18, stride=12)
    with pytest.raises(ValueError, match="0 < stride <= tile"):
        encode_tiled(vae, np.zeros((1, 3, 8, 8), np.float32), tile=16, stride=20)
