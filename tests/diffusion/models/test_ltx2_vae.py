"""The LTX-2 video VAE against diffusers' AutoencoderKLLTX2Video on torch CPU (tiny random
weights, 2x2 patches, 9 or 17 frames, latents 3x5 or 4x4: sizes no tile's multiple):
decode (the causal, timestep-conditioned variant too), encode, tiled over frames and space
as diffusers tiles (tiny tiles), float16 decode, the latents' (un)normalisation, and its
weights read from a diffusers folder and from LTX-2's single checkpoint (original names
under `vae.`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from ltx2_vae_tiny import (
    LTX2_VAE_TINY,
    LTX2_VAE_TINY_TIMESTEP,
    LTX2_VAE_TINY_WIDENING,
    tiny_ltx2_vae,
)
from safetensors.numpy import save_file
from sd_tiny import ported
from support import assert_close

import gpucore
from diffusion.loaders.errors import WeightsError
from diffusion.loaders.ltx2 import load_ltx2_vae
from diffusion.models.ltx2_vae import AutoencoderKLLTX2Video
from gpustd import asarray

TOL = 2e-5  # measured: 7.5e-6 (timestep decode), 4.7e-6 (tiled decode), 2.5e-6 (encode)


def _pair(device: gpucore.Device, **overrides: Any) -> tuple[Any, AutoencoderKLLTX2Video]:
    reference = tiny_ltx2_vae(**overrides)
    return reference, ported(AutoencoderKLLTX2Video, reference, device)


def _decoded(model: torch.nn.Module, latents: np.ndarray, t: float | None = None) -> np.ndarray:
    temb = None if t is None else torch.tensor([t] * latents.shape[0])
    with torch.no_grad():
        return model.decode(torch.from_numpy(latents), temb).sample.numpy()


def test_decode_equals_diffusers(device: gpucore.Device) -> None:
    """The released shape: not causal, reflect padding, residual 2x2x2 up-samplers."""
    reference, ours = _pair(device)
    latents = np.random.default_rng(3).standard_normal((1, 8, 2, 3, 5)).astype(np.float32)
    got = ours.decode(asarray(latents, device=device)).numpy()
    assert got.shape == (1, 3, 9, 48, 80) and np.abs(got).mean() > 0.1
    assert np.abs(got[:, :, 1] - got[:, :, 8]).mean() > 0.05  # the frames differ
    assert_close(got, _decoded(reference, latents), tol=TOL)


def test_timestep_decode_equals_diffusers(device: gpucore.Device) -> None:
    """A causal, timestep-conditioned decoder (two videos, each its own timestep) with an
    up-sampler of factor 1 and one without its residual."""
    reference, ours = _pair(device, **LTX2_VAE_TINY_TIMESTEP)
    latents = np.random.default_rng(4).standard_normal((2, 8, 2, 3, 5)).astype(np.float32)
    with torch.no_grad():
        expected = reference.decode(torch.from_numpy(latents),
                                    torch.tensor([0.05, 0.4])).sample.numpy()
    got = ours.decode(asarray(latents, device=device), [0.05, 0.4]).numpy()
    assert_close(got, expected, tol=TOL)
    # the timestep matters: the same latents decode otherwise at another one
    assert np.abs(expected[1] - _decoded(reference, latents[1:], 0.05)[0]).mean() > 0.05
    with pytest.raises(ValueError, match="decoder is timestep-conditioned: pass"):
        ours.decode(asarray(latents, device=device))


def test_widening_up_blocks_equal_diffusers(device: gpucore.Device) -> None:
    """Up blocks changing their channels: a conv_in residual block (16 -> 24 -> 8 channels)
    whose shortcut is LayerNorm'd over the channels and a 1x1x1 conv."""
    reference, ours = _pair(device, **LTX2_VAE_TINY_WIDENING)
    assert reference.decoder.up_blocks[2].conv_in.norm3 is not None
    latents = np.random.default_rng(9).standard_normal((1, 8, 2, 2, 3)).astype(np.float32)
    got = ours.decode(asarray(latents, device=device)).numpy()
    assert got.shape == (1, 3, 9, 32, 48)
    assert_close(got, _decoded(reference, latents), tol=TOL)


def test_encode_equals_diffusers(device: gpucore.Device) -> None:
    """Both tiny encoders: the released one's down-samplers, and a strided conv's ("conv")."""
    rng = np.random.default_rng(5)
    pixels = rng.uniform(-1, 1, (2, 3, 9, 32, 48)).astype(np.float32)
    for overrides in ({}, LTX2_VAE_TINY_TIMESTEP):
        reference, ours = _pair(device, **overrides)
        with torch.no_grad():
            posterior = reference.encode(torch.from_numpy(pixels)).latent_dist
        video = asarray(pixels, device=device)
        mean, logvar = ours.moments(video)
        assert mean.shape == (2, 8, 2, 2, 3)
        assert_close(mean.numpy(), posterior.mean.numpy(), tol=TOL)
        assert_close(logvar.numpy(), posterior.logvar.numpy(), tol=TOL)
    noise = rng.standard_normal(mean.shape).astype(np.float32)
    expected = posterior.mean.numpy() + posterior.std.numpy() * noise
    assert_close(ours.encode(video, noise=noise).numpy(), expected, tol=TOL)


_TILES = dict(tile_sample_min_height=48, tile_sample_min_width=48,
              tile_sample_stride_height=32, tile_sample_stride_width=32)


def _tiled_pair(device: gpucore.Device) -> tuple[Any, AutoencoderKLLTX2Video]:
    """Both tiled over space (48 px tiles every 32) and frames (16 + 1 every 8: diffusers'
    `use_framewise_decoding`, which its encode reads too); no residual blocks, the tiling
    being what is tested (torch's CPU conv3d makes most of the test's time)."""
    reference, ours = _pair(device, layers_per_block=(0,) * 5,
                            decoder_layers_per_block=(0,) * 4)
    reference.enable_tiling(**_TILES)
    reference.use_framewise_decoding = True
    ours.enable_tiling(framewise=True, **_TILES)
    return reference, ours


def test_tiled_decode_equals_diffusers(device: gpucore.Device) -> None:
    """2 x 2 tiles on 64 px, two frame tiles (the second dropping its last decoded frame),
    blended as diffusers blends them."""
    reference, ours = _tiled_pair(device)
    latents = np.random.default_rng(6).standard_normal((1, 8, 3, 4, 4)).astype(np.float32)
    expected = _decoded(reference, latents)
    got = ours.decode(asarray(latents, device=device)).numpy()
    assert got.shape == (1, 3, 17, 64, 64)
    assert_close(got, expected, tol=TOL)
    reference.use_framewise_decoding = reference.use_tiling = False
    assert np.abs(_decoded(reference, latents) - expected).max() > 0.05  # the tiles matter


def test_tiled_encode_equals_diffusers(device: gpucore.Device) -> None:
    """Two tiles down 64 px, three frame tiles of 17 frames (the last, one frame, adds none)."""
    reference, ours = _tiled_pair(device)
    pixels = np.random.default_rng(7).uniform(-1, 1, (1, 3, 17, 64, 32)).astype(np.float32)
    with torch.no_grad():
        expected = reference.encode(torch.from_numpy(pixels)).latent_dist.mean.numpy()
    mean, _ = ours.moments(asarray(pixels, device=device))
    assert mean.shape == (1, 8, 3, 4, 2)
    assert_close(mean.numpy(), expected, tol=TOL)
    reference.use_framewise_decoding = reference.use_tiling = False
    with torch.no_grad():
        whole = reference.encode(torch.from_numpy(pixels)).latent_dist.mean.numpy()
    assert np.abs(whole - expected).max() > 0.02  # the tiles matter


def test_decode_f16(f16_device: gpucore.Device) -> None:
    """float16 weights and activations (float32 norms' sums and convolution sums)."""
    reference = tiny_ltx2_vae()
    ours = ported(AutoencoderKLLTX2Video, reference, f16_device, dtype=np.float16)
    latents = np.random.default_rng(7).standard_normal((1, 8, 2, 3, 5)).astype(np.float32)
    got = ours.decode(asarray(latents, dtype=np.float16, device=f16_device)).numpy()
    assert got.dtype == np.float16
    assert_close(got.astype(np.float32), _decoded(reference, latents), tol=1.5e-2)  # 5.6e-3


def test_latents_normalised_per_channel(device: gpucore.Device) -> None:
    """(z - mean) * scaling_factor / std and back, the checkpoint's per-channel statistics
    (float64 numpy: LTX2Pipeline's _normalize_latents / _denormalize_latents)."""
    reference, ours = _pair(device, scaling_factor=0.7)
    mean = reference.latents_mean.numpy().astype(np.float64).reshape(1, -1, 1, 1, 1)
    std = reference.latents_std.numpy().astype(np.float64).reshape(1, -1, 1, 1, 1)
    z = np.random.default_rng(8).standard_normal((2, 8, 2, 3, 5)).astype(np.float32)
    normal = ours.normalize(asarray(z, device=device))
    assert_close(normal.numpy(), (z - mean) * 0.7 / std, tol=1e-6)
    assert_close(ours.denormalize(normal).numpy(), z, tol=1e-6)


def _original_name(key: str) -> str:
    """LTX-2's own name of a diffusers VAE key (the single checkpoint's, before `vae.`):
    levels' blocks and samplers in one list, the decoder's mid block its up_blocks.0."""
    side, _, rest = key.partition(".")
    names = {"latents_mean": "per_channel_statistics.mean-of-means",
             "latents_std": "per_channel_statistics.std-of-means"}
    if key in names:
        return names[key]
    part, _, rest = rest.partition(".")
    if part == "mid_block":
        head = "down_blocks.8" if side == "encoder" else "up_blocks.0"
        return f"{side}.{head}.{rest.replace('resnets', 'res_blocks')}"
    if part not in ("down_blocks", "up_blocks"):
        return key
    level, _, rest = rest.partition(".")
    sampler = "downsamplers.0." if part == "down_blocks" else "upsamplers.0."
    if rest.startswith(sampler):  # both sides' samplers at odd places
        return f"{side}.{part}.{2 * int(level) + 1}.{rest[len(sampler):]}"
    blocks = 2 * int(level) + (part == "up_blocks") * 2  # a decoder level's after its sampler
    return f"{side}.{part}.{blocks}.{rest.replace('resnets', 'res_blocks')}"


@pytest.mark.nodevice
def test_weights_from_folder_and_single_checkpoint(tmp_path: Path) -> None:
    reference = tiny_ltx2_vae()
    reference.save_pretrained(tmp_path / "pipe" / "vae")
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    single = {f"vae.{_original_name(k)}": v for k, v in state.items()}
    single.update({"vae.per_channel_statistics.channel": np.arange(8.0, dtype=np.float32),
                   "vae.per_channel_statistics.mean-of-stds": np.ones(8, np.float32),
                   "audio_vae.per_channel_statistics.mean-of-means": np.ones(4, np.float32),
                   "model.diffusion_model.proj_in.weight": np.ones((2, 2), np.float32)})
    assert "vae.decoder.up_blocks.6.res_blocks.0.conv1.conv.weight" in single
    save_file(single, tmp_path / "ltx-2-19b-dev.safetensors")
    folder = load_ltx2_vae(tmp_path / "pipe")
    assert folder.config["latent_channels"] == LTX2_VAE_TINY["latent_channels"]
    config = json.loads((tmp_path / "pipe" / "vae" / "config.json").read_text())
    file = load_ltx2_vae(tmp_path / "ltx-2-19b-dev.safetensors", config=config)
    for weights in (folder, file):
        assert set(weights) == set(state)
        for key in ("decoder.up_blocks.1.upsamplers.0.conv.conv.weight", "latents_std",
                    "encoder.down_blocks.3.downsamplers.0.conv.conv.bias",
                    "encoder.mid_block.resnets.0.conv2.conv.weight"):
            np.testing.assert_array_equal(weights[key], state[key])
    assert load_ltx2_vae(tmp_path / "ltx-2-19b-dev.safetensors").config["decoder_causal"] is False
    save_file({"decoder.conv_in.weight": np.zeros((2, 2), np.float32)}, tmp_path / "x.safetensors")
    with pytest.raises(WeightsError, match="not an LTX-2 video VAE"):
        load_ltx2_vae(tmp_path / "x.safetensors")


@pytest.mark.nodevice
def test_bad_config_says_what_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"decoder_inject_noise \(only False\)"):
        AutoencoderKLLTX2Video({**LTX2_VAE_TINY, "decoder_inject_noise": True})
    with pytest.raises(ValueError, match="upsample_type"):
        AutoencoderKLLTX2Video({**LTX2_VAE_TINY, "upsample_type": ("conv",) * 3})


def test_bad_input_says_what_in_one_line(device: gpucore.Device) -> None:
    _, ours = _pair(device)
    with pytest.raises(ValueError, match=r"latents must be a \(batch, 8, frames"):
        ours.decode(asarray(np.zeros((1, 8, 3, 5), np.float32), device=device))
    with pytest.raises(ValueError, match="1 \\+ 8 k frames and sides multiples of 16, got 8"):
        ours.encode(asarray(np.zeros((1, 3, 8, 16, 16), np.float32), device=device))
