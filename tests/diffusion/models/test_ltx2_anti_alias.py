"""LTX-2 vocoders' anti-aliased SnakeBeta (ltx2_vocoder_blocks.AntiAlias: one kernel,
shaders/nn/anti_alias_snake.wgsl) against diffusers' AntiAliasAct1d on torch CPU and a numpy
float64 reference written from its definition (replicate pad, ratio x conv_transpose1d,
crop; SnakeBeta; replicate pad, strided low-pass), random log-scale parameters, odd lengths."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from conftest import ADAPTERS
from diffusers.pipelines.ltx2.vocoder import AntiAliasAct1d
from diffusers.pipelines.ltx2.vocoder import SnakeBeta as RefSnakeBeta
from support import assert_close

import gpucore
from bench._harness import counting
from diffusion.models.ltx2_vocoder_blocks import AntiAlias, SnakeBeta
from gpustd import asarray

TOL = 1e-6  # measured: 2e-7 (diffusers, and float64; diffusers to float64: 1.3e-7)
F16_TOL = 1e-2  # measured: 2.6e-3


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
    if ADAPTERS and device.info.index != ADAPTERS[0].index:
        pytest.skip("the vocoders run on the first adapter (CI time)")
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
    if ADAPTERS and f16_device.info.index != ADAPTERS[0].index:
        pytest.skip("the vocoders run on the first adapter (CI time)")
    reference, ours, _ = _pair(f16_device, 4, True, np.float16)
    x = np.random.default_rng(2).standard_normal((1, 4, 17)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    got = ours(asarray(x, dtype=np.float16, device=f16_device))
    assert got.dtype == np.float16
    assert_close(got.numpy().astype(np.float32), expected, tol=F16_TOL)
