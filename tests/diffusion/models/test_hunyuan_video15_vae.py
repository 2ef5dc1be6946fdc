"""The HunyuanVideo 1.5 VAE against diffusers' AutoencoderKLHunyuanVideo15 on torch CPU
(tiny random weights: 8x spatial and 4x temporal compression, 5 and 9 frames of 24x40 pixels,
sizes that are no tile multiples), whole and in diffusers' spatial tiles (tiny tiles), in float32
and float16, and its weights read from a diffusers folder."""

from __future__ import annotations

from pathlib import Path
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
from diffusion.loaders.errors import WeightsError
from diffusion.loaders.hunyuan_video15 import load_hunyuan_video15_vae
from diffusion.models.hunyuan_video15_vae import AutoencoderKLHunyuanVideo15
from gpustd import asarray

TOL = 1e-5  # measured: 2.5e-6 (decode), 4.7e-6 (encode), tiled alike (max abs, outputs ~0.5)


def _pair(device: gpucore.Device) -> tuple[torch.nn.Module, AutoencoderKLHunyuanVideo15]:
    reference = tiny_hunyuan_video15_vae()
    return reference, ported(AutoencoderKLHunyuanVideo15, reference, device)


def _decoded(model: torch.nn.Module, latents: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.decode(torch.from_numpy(latents)).sample.numpy()


def test_decode_equals_diffusers(device: gpucore.Device) -> None:
    reference, ours = _pair(device)
    latents = np.random.default_rng(3).standard_normal((1, 4, 2, 3, 5)).astype(np.float32)
    got = ours.decode(asarray(latents, device=device)).numpy()
    assert got.shape == (1, 3, 5, 24, 40) and np.abs(got).mean() > 0.1
    assert np.abs(got[:, :, 1] - got[:, :, 2]).mean() > 0.02  # the frames differ
    expected = _decoded(reference, latents)
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
    # the videos and their frames give visibly different latents
    assert np.abs(np.diff(mean.numpy(), axis=0)).mean() > 0.1
    assert np.abs(np.diff(mean.numpy(), axis=2)).mean() > 0.1
    assert_close(mean.numpy(), posterior.mean.numpy(), tol=TOL)
    assert_close(logvar.numpy(), posterior.logvar.numpy(), tol=TOL)
    noise = rng.standard_normal(mean.shape).astype(np.float32)
    expected = posterior.mean.numpy() + posterior.std.numpy() * noise
    assert np.abs(expected - posterior.mean.numpy()).mean() > 0.1  # the noise matters
    assert_close(ours.encode(video, noise=noise).numpy(), expected, tol=TOL)


def test_one_frame_equals_diffusers(device: gpucore.Device) -> None:
    """A picture (one frame, what image-to-video encodes): the samplers' first-frame path
    alone."""
    reference, ours = _pair(device)
    rng = np.random.default_rng(5)
    pixels = rng.uniform(-1, 1, (1, 3, 1, 16, 24)).astype(np.float32)
    with torch.no_grad():
        posterior = reference.encode(torch.from_numpy(pixels)).latent_dist
    mean, logvar = ours.moments(asarray(pixels, device=device))
    assert mean.shape == (1, 4, 1, 2, 3)
    assert_close(mean.numpy(), posterior.mean.numpy(), tol=TOL)
    assert_close(logvar.numpy(), posterior.logvar.numpy(), tol=TOL)
    latents = rng.standard_normal((1, 4, 1, 2, 3)).astype(np.float32)
    got = ours.decode(asarray(latents, device=device)).numpy()
    assert got.shape == (1, 3, 1, 16, 24)
    assert_close(got, _decoded(reference, latents), tol=TOL)


def test_spatial_tiles_equal_diffusers(device: gpucore.Device) -> None:
    """enable_tiling with tiny tiles: 4 latents (32 px) every 3 (24 px), blended over 8 px
    (one latent when encoding), 2 x 2 tiles whose last ones are cut short. One frame: the
    tiles cut space only."""
    reference, ours = _pair(device)
    sizes = dict(tile_sample_min_height=32, tile_sample_min_width=32,
                 tile_latent_min_height=4, tile_latent_min_width=4)
    for model in (reference, ours):
        model.enable_tiling(**sizes)
    rng = np.random.default_rng(6)
    latents = asarray(rng.standard_normal((1, 4, 1, 4, 5)).astype(np.float32), device=device)
    got = ours.decode(latents).numpy()
    assert got.shape == (1, 3, 1, 32, 40)
    expected = _decoded(reference, latents.numpy())
    assert_close(got, expected, tol=TOL)
    ours.disable_tiling()
    assert np.abs(ours.decode(latents).numpy() - expected).max() > 0.01  # the tiles matter
    ours.enable_tiling()
    pixels = rng.uniform(-1, 1, (1, 3, 1, 40, 48)).astype(np.float32)
    with torch.no_grad():
        posterior = reference.encode(torch.from_numpy(pixels)).latent_dist
    mean, _ = ours.moments(asarray(pixels, device=device))
    assert mean.shape == (1, 4, 1, 5, 6)
    assert_close(mean.numpy(), posterior.mean.numpy(), tol=TOL)


def test_decode_f16(f16_device: gpucore.Device) -> None:
    """float16 weights and activations (float32 sums) against diffusers in float32."""
    reference = tiny_hunyuan_video15_vae()
    ours = ported(AutoencoderKLHunyuanVideo15, reference, f16_device, dtype=np.float16)
    latents = np.random.default_rng(7).standard_normal((1, 4, 2, 3, 5)).astype(np.float32)
    got = ours.decode(asarray(latents, dtype=np.float16, device=f16_device)).numpy()
    assert got.dtype == np.float16
    # measured: 5.5e-3 at most (outputs ~0.5)
    assert_close(got.astype(np.float32), _decoded(reference, latents), tol=1.5e-2)


@pytest.mark.nodevice
def test_weights_from_folder_and_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    reference = tiny_hunyuan_video15_vae()
    reference.save_pretrained(tmp_path / "pipe" / "vae")
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    save_file({f"vae.{k}": v.contiguous() for k, v in reference.state_dict().items()},
              str(tmp_path / "vae.safetensors"))
    folder = load_hunyuan_video15_vae(tmp_path / "pipe")
    assert folder.config["block_out_channels"] == list(
        HUNYUAN_VIDEO15_VAE_TINY["block_out_channels"])
    single = load_hunyuan_video15_vae(tmp_path / "vae.safetensors", config=folder.config)
    for weights in (folder, single):
        assert set(weights) == set(state)
        for key in ("decoder.up_blocks.1.upsamplers.0.conv.conv.weight",
                    "encoder.mid_block.attentions.0.norm.gamma"):
            np.testing.assert_array_equal(weights[key], state[key])
    original = {"decoder.mid.attn_1.norm.gamma": torch.ones(32, 1, 1, 1)}
    save_file(original, str(tmp_path / "tencent.safetensors"))
    with pytest.raises(WeightsError, match=r"original Tencent HunyuanVideo 1\.5 VAE layout"):
        load_hunyuan_video15_vae(tmp_path / "tencent.safetensors")
    (tmp_path / "pipe" / "vae" / "config.json").write_text(
        '{"_class_name": "AutoencoderKLHunyuanVideo"}')
    with pytest.raises(WeightsError, match="not an AutoencoderKLHunyuanVideo15"):
        load_hunyuan_video15_vae(tmp_path / "pipe")


@pytest.mark.nodevice
def test_bad_config_says_what_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"spatial_compression_ratio 12 \(a power of two\)"):
        AutoencoderKLHunyuanVideo15({**HUNYUAN_VIDEO15_VAE_TINY, "spatial_compression_ratio": 12})
    with pytest.raises(ValueError, match="needs more than 4 block_out_channels"):
        AutoencoderKLHunyuanVideo15({**HUNYUAN_VIDEO15_VAE_TINY, "spatial_compression_ratio": 16})


def test_bad_input_says_what_in_one_line(device: gpucore.Device) -> None:
    _, ours = _pair(device)
    with pytest.raises(ValueError, match=r"latents must be a \(batch, 4, frames"):
        ours.decode(asarray(np.zeros((1, 4, 3, 5), np.float32), device=device))
    with pytest.raises(ValueError, match=r"give 1 \+ 4k frames with sides multiples of 8"):
        ours.encode(asarray(np.zeros((1, 3, 2, 8, 8), np.float32), device=device))
    with pytest.raises(ValueError, match="noise must have the latents' shape"):
        ours.encode(asarray(np.zeros((1, 3, 1, 8, 8), np.float32), device=device),
                    noise=np.zeros((1, 4, 1, 2, 2), np.float32))
    with pytest.raises(ValueError, match="tiles too small"):
        ours.enable_tiling(tile_latent_min_height=1)
