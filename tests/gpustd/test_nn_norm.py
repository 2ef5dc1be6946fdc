"""gpustd.nn.group_norm / layer_norm against torch CPU in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from support import assert_close, random_array

import gpucore
from gpustd import Tensor
from gpustd.nn import group_norm, layer_norm

F32_TOL = 1e-4


def _t(a) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(np.asarray(a, np.float64))


def _inputs(device, shape, channels, *, affine=True, dtype=np.float32, seed=0, offset=0.0,
            scale=1.0):
    rng = np.random.default_rng(seed)
    x = (random_array(rng, shape, np.float64) * scale + offset).astype(dtype)
    w = random_array(rng, (channels,), dtype, 0.5, 1.5) if affine else None
    b = random_array(rng, (channels,), dtype) if affine else None
    up = [None if a is None else Tensor.from_numpy(a, device=device) for a in (x, w, b)]
    return (x, w, b), up


def _check_group_norm(device, shape, groups, *, silu=False, dtype=np.float32, **kw) -> None:
    (x, w, b), up = _inputs(device, shape, shape[1], dtype=dtype, **kw)
    out = group_norm(up[0], groups, up[1], up[2], eps=1e-6, silu=silu)
    ref = F.group_norm(_t(x), groups, _t(w), _t(b), eps=1e-6)
    if silu:
        ref = F.silu(ref)
    assert_close(out.numpy(), ref.numpy(), dtype=dtype,
                 tol=F32_TOL if dtype == np.float32 else None)


@pytest.mark.parametrize("shape,groups", [
    ((2, 32, 16, 16), 32),  # SD: 32 groups, scaled channels
    ((2, 64, 9, 7), 8),  # odd spatial size
    ((1, 6, 1, 1), 3),  # one pixel
    ((3, 10, 13), 5),  # 3-D input (N, C, L)
    ((2, 4), 2),  # no spatial dims
])
def test_group_norm_matches_torch(device: gpucore.Device, shape, groups) -> None:
    _check_group_norm(device, shape, groups)


def test_group_norm_fused_silu(device: gpucore.Device) -> None:
    _check_group_norm(device, (2, 32, 12, 12), 8, silu=True)


def test_group_norm_without_affine(device: gpucore.Device) -> None:
    (x, _, _), up = _inputs(device, (2, 8, 5, 5), 8, affine=False)
    out = group_norm(up[0], 4)
    assert_close(out.numpy(), F.group_norm(_t(x), 4).numpy(), tol=F32_TOL)


def test_group_norm_is_stable_under_a_large_mean(device: gpucore.Device) -> None:
    # A one-pass E[x^2] - E[x]^2 in float32 loses every digit here, and a float32 mean
    # near 1e4 is off by up to 5e-4; centered two-pass statistics keep them all.
    _check_group_norm(device, (1, 8, 64, 64), 2, offset=1e4, scale=1.0)


def test_group_norm_vae_size(device: gpucore.Device) -> None:
    """A group as large as the VAE decoder's largest (1x128x512x512 in 32 groups: 4 channels
    of 512x512, 128 chunks of the stats pass to merge), alone: the 31 others would add 32x
    the work and nothing the shapes above do not cover."""
    _check_group_norm(device, (1, 4, 512, 512), 1, silu=True)


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 3), groups=st.integers(1, 6), per_group=st.integers(1, 5),
       h=st.integers(1, 40), w=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_group_norm_random_shapes(device: gpucore.Device, n, groups, per_group, h, w,
                                  seed) -> None:
    assume(per_group * h * w > 1)  # torch refuses a one-element group
    _check_group_norm(device, (n, groups * per_group, h, w), groups, seed=seed)


@pytest.mark.parametrize("shape", [(2, 32, 10, 10), (2, 32, 9, 7)], ids=str)  # vec4, scalar
def test_group_norm_float16(f16_device: gpucore.Device, shape) -> None:
    _check_group_norm(f16_device, shape, 8, silu=True, dtype=np.float16)


def _check_layer_norm(device, shape, *, dtype=np.float32, affine=True, **kw) -> None:
    (x, w, b), up = _inputs(device, shape, shape[-1], dtype=dtype, affine=affine, **kw)
    out = layer_norm(up[0], up[1], up[2], eps=1e-5)
    ref = F.layer_norm(_t(x), shape[-1:], _t(w), _t(b), eps=1e-5)
    assert_close(out.numpy(), ref.numpy(), dtype=dtype,
                 tol=F32_TOL if dtype == np.float32 else None)


@pytest.mark.parametrize("shape", [(2, 77, 768), (2, 64, 320), (3, 1280), (5, 7), (4, 1)])
def test_layer_norm_matches_torch(device: gpucore.Device, shape) -> None:
    _check_layer_norm(device, shape)


def test_layer_norm_without_affine_and_large_mean(device: gpucore.Device) -> None:
    _check_layer_norm(device, (6, 3000), affine=False, offset=1e4)


@settings(max_examples=12, deadline=None)
@given(rows=st.integers(1, 40), d=st.integers(1, 3000), seed=st.integers(0, 2**16))
def test_layer_norm_random_shapes(device: gpucore.Device, rows, d, seed) -> None:
    _check_layer_norm(device, (rows, d), seed=seed)


@pytest.mark.parametrize("shape", [(2, 77, 768), (3, 77)], ids=str)
def test_layer_norm_float16(f16_device: gpucore.Device, shape) -> None:
    _check_layer_norm(f16_device, shape, dtype=np.float16)


def test_norm_errors(device: gpucore.Device) -> None:
    def t(shape, dtype=np.float32):
        return Tensor.from_numpy(np.ones(shape, dtype), device=device)

    x = t((2, 6, 4, 4))
    with pytest.raises(ValueError, match="num_groups"):
        group_norm(x, 4, t((6,)), t((6,)))
    with pytest.raises(ValueError, match=r"weight must have shape \(6,\)"):
        group_norm(x, 3, t((5,)), t((6,)))
    with pytest.raises(ValueError, match="both weight and bias"):
        group_norm(x, 3, t((6,)), None)
    with pytest.raises(ValueError, match=r"\[N, C"):
        group_norm(t((6,)), 3)
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        layer_norm(x, t((4,)), t((6,)))
    with pytest.raises(TypeError, match="int32"):
        layer_norm(t((2, 4), np.int32))
    with pytest.raises(TypeError, match="gpustd Tensor"):
        layer_norm(np.ones((2, 4), np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_layer_norm_modulate_equals_two_passes(device: gpucore.Device, dtype) -> None:
    """adaLN's norm and modulation in one pass: the bits of layer_norm then the DiTs'
    compiled modulate kernel, each batch entry its own shift and scale; near float64."""
    from gpustd import elementwise_kernel
    from gpustd.nn import layer_norm_modulate

    @elementwise_kernel
    def modulate(x, shift, scale):
        return x * (1.0 + scale) + shift

    if dtype == np.float16 and not device.has_f16:
        pytest.skip(f"{device.info.label} has no shader-f16")
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((2, 37, 300)) * 3 + 5).astype(dtype)
    shift, scale = (rng.standard_normal((2, 1, 300)).astype(dtype) for _ in range(2))
    tx, tshift, tscale = (Tensor.from_numpy(a, device=device) for a in (x, shift, scale))
    got = layer_norm_modulate(tx, tshift, tscale, eps=1e-6).numpy()
    two = modulate(layer_norm(tx, eps=1e-6), tshift, tscale).numpy()
    assert got.dtype == dtype and np.array_equal(got, two)
    ref = F.layer_norm(_t(x), (300,), eps=1e-6).numpy() * (1 + _t(scale).numpy()) \
        + _t(shift).numpy()
    assert_close(got, ref, dtype=dtype, tol=F32_TOL if dtype == np.float32 else None)
    with pytest.raises(ValueError, match=r"shift must have shape \(2, 1, 300\)"):
        layer_norm_modulate(tx, tscale.reshape(2, 300, 1), tscale)
    # shift and scale read in place from one adaLN output [B, 1, 3 * 300] (chunks 2 and 0)
    whole = np.concatenate([scale, rng.standard_normal((2, 1, 300)).astype(dtype), shift], 2)
    twhole = Tensor.from_numpy(whole, device=device)
    inplace = layer_norm_modulate(tx, twhole, twhole, eps=1e-6, shift_at=600, scale_at=0)
    assert np.array_equal(inplace.numpy(), got)
    with pytest.raises(ValueError, match="shift_at=700 do not fit its width 900"):
        layer_norm_modulate(tx, twhole, twhole, shift_at=700)
