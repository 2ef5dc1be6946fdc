"""The HunyuanVideo VAE against diffusers' AutoencoderKLHunyuanVideo on torch CPU (tiny random
weights, 9 frames of 24x40 pixels, 4x spatial and 4x temporal compression), whole and tiled
over frames and space as diffusers tiles (tiny tiles), and its weights read from a diffusers
folder and from the original release's pytorch_model.pt layout."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from diffusers.models.autoencoders import autoencoder_kl_hunyuan_video as hunyuan
from hunyuan_video_vae_tiny import HUNYUAN_VIDEO_VAE_TINY, tiny_hunyuan_video_vae
from sd_tiny import ported
from support import assert_close

import gpucore
from diffusion.loaders.errors import WeightsError
from diffusion.loaders.hunyuan_video import load_hunyuan_video_vae
from diffusion.models.hunyuan_video_vae import AutoencoderKLHunyuanVideo
from gpustd import asarray

TOL = 2e-5  # measured: 5e-6 (decode, tiled too), 3e-6 (encode)


def _pair(device: gpucore.Device) -> tuple[torch.nn.Module, AutoencoderKLHunyuanVideo]:
    reference = tiny_hunyuan_video_vae()
    return reference, ported(AutoencoderKLHunyuanVideo, reference, device)


def _decoded(model: torch.nn.Module, latents: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.decode(torch.from_numpy(latents)).sample.numpy()


def test_decode_equals_diffusers(device: gpucore.Device) -> None:
    reference, ours = _pair(device)
    rng = np.random.default_rng(3)
    latents = rng.standard_normal((1, 4, 3, 6, 10)).astype(np.float32)
    got = ours.decode(asarray(latents, device=device)).numpy()
    assert got.shape == (1, 3, 9, 24, 40) and np.abs(got).mean() > 0.1
    assert np.abs(got[:, :, 1] - got[:, :, 2]).mean() > 0.02  # the frames differ
    assert_close(got, _decoded(reference, latents), tol=TOL)
    # the attention's frame-causal mask matters: without it diffusers' frames differ
    unmasked = mock.patch.object(hunyuan, "prepare_causal_attention_mask",
                                 side_effect=lambda frames, pixels, *_, batch_size: torch.zeros(
                                     batch_size, frames * pixels, frames * pixels))
    with unmasked:
        assert np.abs(_decoded(reference, latents) - got).max() > 0.01


def test_encode_equals_diffusers(device: gpucore.Device) -> None:
    reference, ours = _pair(device)
    rng = np.random.default_rng(4)
    pixels = rng.uniform(-1, 1, (2, 3, 9, 24, 40)).astype(np.float32)
    with torch.no_grad():
        posterior = reference.encode(torch.from_numpy(pixels)).latent_dist
    video = asarray(pixels, device=device)
    mean, logvar = ours.moments(video)
    assert mean.shape == (2, 4, 3, 6, 10)
    assert_close(mean.numpy(), posterior.mean.numpy(), tol=TOL)
    assert_close(logvar.numpy(), posterior.logvar.numpy(), tol=TOL)
    assert_close(ours.encode(video).numpy(), posterior.mode().numpy(), tol=TOL)
    noise = rng.standard_normal(mean.shape).astype(np.float32)
    expected = posterior.mean.numpy() + posterior.std.numpy() * noise
    assert_close(ours.encode(video, noise=noise).numpy(), expected, tol=TOL)


def test_frame_tiles_equal_diffusers(device: gpucore.Device) -> None:
    """Frames tile by default (diffusers' use_framewise_*): tiles of 12 + 1 frames every 8,
    the last latent tile one frame (run by diffusers, its frame dropped)."""
    reference, ours = _pair(device)
    for model in (reference, ours):
        model.tile_sample_min_num_frames, model.tile_sample_stride_num_frames = 12, 8
    rng = np.random.default_rng(5)
    latents = rng.standard_normal((1, 4, 5, 3, 5)).astype(np.float32)
    expected = _decoded(reference, latents)
    reference.use_framewise_decoding = False
    assert np.abs(_decoded(reference, latents) - expected).max() > 0.01  # the tiles matter
    got = ours.decode(asarray(latents, device=device)).numpy()
    assert got.shape == (1, 3, 17, 12, 20)
    assert_close(got, expected, tol=TOL)
    pixels = rng.uniform(-1, 1, (1, 3, 17, 12, 20)).astype(np.float32)  # last tile 1 frame
    with torch.no_grad():
        posterior = reference.encode(torch.from_numpy(pixels)).latent_dist
    mean, logvar = ours.moments(asarray(pixels, device=device))
    assert_close(mean.numpy(), posterior.mean.numpy(), tol=TOL)
    assert_close(logvar.numpy(), posterior.logvar.numpy(), tol=TOL)


def test_spatial_tiles_equal_diffusers(device: gpucore.Device) -> None:
    """enable_tiling: 16x20 px tiles every 12 px (2 x 2 of them), blended as diffusers
    blends them."""
    reference, ours = _pair(device)
    sizes = dict(tile_sample_min_height=16, tile_sample_min_width=20,
                 tile_sample_stride_height=12, tile_sample_stride_width=12)
    for model in (reference, ours):
        model.enable_tiling(**sizes)
    rng = np.random.default_rng(6)
    latents = rng.standard_normal((1, 4, 2, 6, 6)).astype(np.float32)
    got = ours.decode(asarray(latents, device=device)).numpy()
    assert got.shape == (1, 3, 5, 24, 24)
    assert_close(got, _decoded(reference, latents), tol=TOL)
    pixels = rng.uniform(-1, 1, (1, 3, 5, 24, 22)).astype(np.float32)
    with torch.no_grad():
        posterior = reference.encode(torch.from_numpy(pixels)).latent_dist
    mean, _ = ours.moments(asarray(pixels, device=device))
    assert mean.shape == (1, 4, 2, 6, 5)
    assert_close(mean.numpy(), posterior.mean.numpy(), tol=TOL)


def test_kernels_split_at_load_not_per_call(device: gpucore.Device) -> None:
    """Each 3x3x3 kernel is held as its 3 temporal taps, cut as the weights load: a decode
    binds no weight to a copy (the taps were sliced per call before, 75 copies here)."""
    reference, ours = _pair(device)
    kernel = reference.decoder.conv_in.conv.weight.detach().numpy()
    taps = ours.decoder.conv_in.conv.kernels()
    for t, tap in enumerate(taps):
        np.testing.assert_array_equal(tap.numpy(), kernel[:, :, t])
    weights = {id(p.buffer.wgpu) for p in ours.parameters()}
    copies: list[str] = []
    record = device.record_dispatch

    def watch(pipeline, layout, buffers, params, workgroups, label):  # type: ignore[no-untyped-def]
        if label.startswith("shape/") and any(id(b[0]) in weights for b in buffers):
            copies.append(label)
        record(pipeline, layout, buffers, params, workgroups, label)

    latents = np.random.default_rng(8).standard_normal((1, 4, 2, 3, 5)).astype(np.float32)
    with mock.patch.object(device, "record_dispatch", watch):
        ours.decode(asarray(latents, device=device)).numpy()
    assert copies == []


@pytest.mark.nodevice
def test_weights_from_folder_and_original_file(tmp_path: Path) -> None:
    reference = tiny_hunyuan_video_vae()
    reference.save_pretrained(tmp_path / "pipe" / "vae")
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    original = {f"vae.{k}": v for k, v in reference.state_dict().items()}
    torch.save({"state_dict": original}, tmp_path / "pytorch_model.pt")
    folder = load_hunyuan_video_vae(tmp_path / "pipe")
    assert folder.config["block_out_channels"] == list(
        HUNYUAN_VIDEO_VAE_TINY["block_out_channels"])
    single = load_hunyuan_video_vae(tmp_path / "pytorch_model.pt", config=folder.config)
    for weights in (folder, single):
        assert set(weights) == set(state)
        for key in ("decoder.up_blocks.1.upsamplers.0.conv.conv.weight",
                    "encoder.mid_block.attentions.0.group_norm.bias"):
            np.testing.assert_array_equal(weights[key], state[key])
    with pytest.raises(WeightsError, match="not a HunyuanVideo VAE"):
        torch.save({"decoder.conv_in.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
        load_hunyuan_video_vae(tmp_path / "other.pt")


@pytest.mark.nodevice
def test_bad_config_says_what_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"temporal_compression_ratio 8 \(only 4\)"):
        AutoencoderKLHunyuanVideo({**HUNYUAN_VIDEO_VAE_TINY, "temporal_compression_ratio": 8})
    with pytest.raises(ValueError, match="act_fn"):
        AutoencoderKLHunyuanVideo({**HUNYUAN_VIDEO_VAE_TINY, "act_fn": "gelu"})


def test_bad_input_says_what_in_one_line(device: gpucore.Device) -> None:
    _, ours = _pair(device)
    with pytest.raises(ValueError, match=r"latents must be a \(batch, 4, frames"):
        ours.decode(asarray(np.zeros((1, 4, 6, 10), np.float32), device=device))
    with pytest.raises(ValueError, match="noise must have the latents' shape"):
        ours.encode(asarray(np.zeros((1, 3, 1, 8, 8), np.float32), device=device),
                    noise=np.zeros((1, 4, 1, 1, 1), np.float32))


def test_decode_f16_frame_tiles(f16_device: gpucore.Device) -> None:
    """float16 weights and activations (float32 sums), the frame tiles blended in float16."""
    reference = tiny_hunyuan_video_vae()
    ours = ported(AutoencoderKLHunyuanVideo, reference, f16_device, dtype=np.float16)
    for model in (reference, ours):
        model.tile_sample_min_num_frames, model.tile_sample_stride_num_frames = 12, 8
    latents = np.random.default_rng(7).standard_normal((1, 4, 5, 3, 5)).astype(np.float32)
    got = ours.decode(asarray(latents, dtype=np.float16, device=f16_device)).numpy()
    assert got.dtype == np.float16
    assert_close(got.astype(np.float32), _decoded(reference, latents), tol=3e-2)  # 1e-2
