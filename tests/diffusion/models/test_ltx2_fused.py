"""LTX-2's fused kernels, each one dispatch: the vocoders' anti-aliased SnakeBeta
(ltx2_vocoder_blocks.AntiAlias, shaders/nn/anti_alias_snake.wgsl) against diffusers'
AntiAliasAct1d on torch CPU and a numpy float64 reference written from its definition
(replicate pad, ratio x conv_transpose1d, crop; SnakeBeta; replicate pad, strided low-pass),
random log-scale parameters, odd lengths; the VAEs' per-pixel RMS norm over channels
(ltx2_audio_blocks.channel_rms_norm, shaders/nn/channel_rms_norm.wgsl) against numpy float64
and diffusers' PerChannelRMSNorm."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from diffusers.models.autoencoders.autoencoder_kl_ltx2 import PerChannelRMSNorm
from diffusers.pipelines.ltx2.vocoder import AntiAliasAct1d
from diffusers.pipelines.ltx2.vocoder import SnakeBeta as RefSnakeBeta
from support import assert_close

import gpucore
from bench._harness import counting
from diffusion.models.ltx2_audio_blocks import channel_rms_norm
from diffusion.models.ltx2_vocoder_blocks import AntiAlias, SnakeBeta
from gpustd import asarray

TOL = 1e-6  # measured: 2e-7 (diffusers, and float64; diffusers to float64: 1.3e-7)
F16_TOL = 1e-2  # measured: 2.6e-3
NORM_TOL = 1e-6  # measured: 1.6e-7
NORM_F16_TOL = 1e-3  # measured: 2.3e-4 (float16's rounding of the output)


def _reference(x: np.ndarray, up: np.ndarray, down: np.ndarray, alpha: np.ndarray,
               beta: np.ndarray, ratio: int) -> np.ndarray:
    """diffusers' UpSample1d, SnakeBeta (log scale) and DownSample1d in float64."""
    k = len(up)
    pad = k // ratio - 1
    crop_left = pad * ratio + (k - ratio) // 2
    crop_right = pad * ratio + (k - ratio + 1) // 2
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad)), mode="edge")
    full = np.zeros((*padded.shape[:2], (padded.shape[2] - 1) * ratio + k))
    for i in range(padded.shape[2]):  # conv_transpose1d at stride `ratio`
        full[..., i * ratio:i * ratio + k] += padded[..., i:i + 1] * up
    u = ratio * full[..., crop_left:full.shape[2] - crop_right]
    a, b = np.exp(alpha)[None, :, None], np.exp(beta)[None, :, None]
    v = u + np.sin(u * a) ** 2 / (b + 1e-9)
    v = np.pad(v, ((0, 0), (0, 0), (k // 2 + k % 2 - 1, k // 2)), mode="edge")
    length = x.shape[2]
    return np.stack([v[..., j * ratio:j * ratio + k] @ down for j in range(length)], axis=-1)


def _pair(device: gpucore.Device, channels: int, beta: bool, dtype=np.float32):
    """diffusers' AntiAliasAct1d (random log-scale alpha, beta) and ours holding its values."""
    torch.manual_seed(7)
    act = RefSnakeBeta(channels, logscale=True, use_beta=beta)
    with torch.no_grad():
        for p in act.parameters():
            p.uniform_(-1.0, 1.0)
    reference = AntiAliasAct1d(act, ratio=2, kernel_size=12).eval()
    ours = AntiAlias(SnakeBeta(channels, {"dtype": dtype, "device": device}, beta=beta),
                     channels, 2, 12, {"dtype": dtype, "device": device})
    state = {name: t.detach().numpy() for name, t in reference.state_dict().items()}
    ours.load_state_dict({name: value.astype(dtype) for name, value in state.items()})
    return reference, ours, state


@pytest.mark.parametrize("beta", [True, False], ids=["snakebeta", "snake"])
def test_fused_activation_equals_diffusers(device: gpucore.Device, beta: bool) -> None:
    reference, ours, state = _pair(device, 3, beta)
    x = (2 * np.random.default_rng(1).standard_normal((2, 3, 29))).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    x_gpu = asarray(x, device=device)
    ours(x_gpu).numpy()  # built once; then a call is one dispatch
    with counting(device) as counts:
        got = ours(x_gpu).numpy()
    assert sum(counts.values()) == 1 and got.shape == x.shape
    assert_close(got, expected, tol=TOL)
    exact = _reference(x.astype(np.float64), state["upsample.filter"].reshape(-1),
                       state["downsample.filter"].reshape(-1), state["act.alpha"],
                       state["act.beta" if beta else "act.alpha"], 2)
    assert_close(got, exact, tol=TOL)
    assert np.abs(exact - x).mean() > 0.1  # the activation visibly acts (not the identity)


def test_fused_activation_float16(f16_device: gpucore.Device) -> None:
    reference, ours, _ = _pair(f16_device, 4, True, np.float16)
    x = np.random.default_rng(2).standard_normal((1, 4, 17)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    got = ours(asarray(x, dtype=np.float16, device=f16_device))
    assert got.dtype == np.float16
    assert_close(got.numpy().astype(np.float32), expected, tol=F16_TOL)


def _norm_reference(x: np.ndarray, eps: float, shift: np.ndarray | None = None,
                    scale: np.ndarray | None = None, silu: bool = False) -> np.ndarray:
    y = x / np.sqrt((x ** 2).mean(axis=1, keepdims=True) + eps)
    if scale is not None and shift is not None:
        y = y * (1 + scale.reshape(1, -1, 1, 1)) + shift.reshape(1, -1, 1, 1)
    return y / (1 + np.exp(-y)) if silu else y


def test_channel_rms_norm_equals_references(device: gpucore.Device) -> None:
    """Plain (the audio VAE's pixel norm), with SiLU, and modulated with SiLU (the video VAE's
    timestep-conditioned blocks); odd sizes, channels of different scales."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((3, 5, 7, 9)) * rng.uniform(0.1, 4, (1, 5, 1, 1)))
    shift, scale = rng.standard_normal(5), rng.standard_normal(5)
    x_gpu = asarray(x.astype(np.float32), device=device)
    modulation = (asarray(shift.astype(np.float32).reshape(1, 5, 1, 1), device=device),
                  asarray(scale.astype(np.float32).reshape(1, 5, 1, 1), device=device))
    with counting(device) as counts:
        plain = channel_rms_norm(x_gpu, 1e-6).numpy()
    assert sum(counts.values()) == 1
    assert_close(plain, _norm_reference(x, 1e-6), tol=NORM_TOL)
    with torch.no_grad():  # diffusers' own norm, the same values
        expected = PerChannelRMSNorm(eps=1e-6)(torch.from_numpy(x.astype(np.float32))).numpy()
    assert_close(plain, expected, tol=NORM_TOL)
    assert_close(channel_rms_norm(x_gpu, 1e-8, silu=True).numpy(),
                 _norm_reference(x, 1e-8, silu=True), tol=NORM_TOL)
    modulated = channel_rms_norm(x_gpu, 1e-8, silu=True, modulation=modulation).numpy()
    assert_close(modulated, _norm_reference(x, 1e-8, shift, scale, silu=True), tol=NORM_TOL)
    assert np.abs(modulated - _norm_reference(x, 1e-8, silu=True)).mean() > 0.1  # it matters


def test_channel_rms_norm_float16(f16_device: gpucore.Device) -> None:
    """float16 values whose squares overflow float16 (|x| > 256): the sum is float32's."""
    x = np.random.default_rng(4).standard_normal((2, 6, 5, 3)) * 300
    got = channel_rms_norm(asarray(x.astype(np.float16), device=f16_device), 1e-8, silu=True)
    assert got.dtype == np.float16
    expected = _norm_reference(x.astype(np.float16).astype(np.float64), 1e-8, silu=True)
    assert_close(got.numpy().astype(np.float32), expected, tol=NORM_F16_TOL)
