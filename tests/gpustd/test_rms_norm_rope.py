"""gpustd.nn.rms_norm_rope against numpy in float64: the per-head RMS norm, the rotation in
both pair layouts, each alone and together, written into a joint buffer at a token offset,
over awkward sizes (odd head dims, one token, rows that do not fill a workgroup)."""

from __future__ import annotations

import numpy as np
import pytest
from support import assert_close

import gpucore
from gpustd import Tensor
from gpustd.nn import rms_norm_rope

F32_TOL = 1e-5


def _reference(x, weight, tables, heads, eps, halves):
    """float64 RMS norm per head, rounded to x's dtype as a norm's output is stored, then the
    rotation (x_a cos - x_b sin, x_b cos + x_a sin) of each pair."""
    d = x.shape[-1] // heads
    y = x.astype(np.float64).reshape(*x.shape[:-1], heads, d)
    if eps is not None:
        y = y / np.sqrt((y * y).mean(-1, keepdims=True) + eps)
    if weight is not None:
        y = y * weight.astype(np.float64)
    y = y.astype(x.dtype).astype(np.float64)
    if tables is not None:
        cos, sin = (t.astype(np.float64) for t in tables)
        if halves:
            partner = np.concatenate([-y[..., d // 2:], y[..., :d // 2]], axis=-1)
        else:
            partner = np.stack([-y[..., 1::2], y[..., 0::2]], axis=-1).reshape(y.shape)
        y = y * cos + partner * sin
    return y.reshape(x.shape)


def _tables(rng, tokens, d):
    angle = rng.uniform(-7, 7, (tokens, 1, d))
    return np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)


def _dtype(device, dtype):
    if dtype == np.float16 and not device.has_f16:
        pytest.skip(f"{device.info.label} has no shader-f16")
    return dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("shape,heads,norm,affine,rope,halves", [
    ((2, 7, 3 * 16), 3, True, True, True, False),  # FLUX's q/k path
    ((1, 5, 2 * 12), 2, True, True, True, True),  # an LLM's rotate_half layout
    ((1, 9, 4 * 6), 4, False, False, True, False),  # the rotation alone
    ((3, 1, 2 * 10), 2, True, False, True, False),  # one token, a norm without a weight
    ((2, 11, 5 * 7), 5, True, True, False, False),  # an odd head dim: the norm alone
    ((3, 4, 300), 1, True, True, False, False),  # T5's rows, many lanes a row
])
def test_rms_norm_rope_matches_numpy(device: gpucore.Device, dtype, shape, heads, norm,
                                     affine, rope, halves) -> None:
    dtype = _dtype(device, dtype)
    rng = np.random.default_rng(11)
    d = shape[-1] // heads
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    weight = rng.uniform(0.5, 2.0, d).astype(dtype) if affine else None
    tables = _tables(rng, shape[1], d) if rope else None
    eps = 0.25 if norm else None
    got = rms_norm_rope(Tensor.from_numpy(x, device=device),
                        None if weight is None else Tensor.from_numpy(weight, device=device),
                        None if tables is None else tuple(Tensor.from_numpy(t, device=device)
                                                          for t in tables),
                        heads=heads, eps=eps, halves=halves)
    assert got.dtype == dtype and got.shape == shape
    expected = _reference(x, weight, tables, heads, eps, halves)
    assert_close(got.numpy(), expected, dtype=dtype, tol=F32_TOL if dtype == np.float32 else None)
    assert np.abs(expected - x).max() > 0.5  # the pass did something


@pytest.mark.parametrize("dtype,weight_dtype", [(np.float32, np.float16),
                                                (np.float16, np.float32)])
def test_rms_norm_weight_of_another_dtype(device: gpucore.Device, dtype, weight_dtype) -> None:
    """T5's float32 norm weights over float16 rows (and float32 rows scaled by float16)."""
    _dtype(device, np.float16)
    rng = np.random.default_rng(13)
    x = (40 * rng.standard_normal((2, 3, 20))).astype(dtype)
    weight = rng.uniform(0.5, 2.0, 20).astype(weight_dtype)
    got = rms_norm_rope(Tensor.from_numpy(x, device=device),
                        Tensor.from_numpy(weight, device=device), eps=1e-6)
    assert got.dtype == dtype
    expected = _reference(x, weight, None, 1, 1e-6, False)
    assert_close(got.numpy(), expected, dtype=dtype, tol=F32_TOL if dtype == np.float32 else None)


def test_rms_norm_rope_into_joint_buffer(device: gpucore.Device) -> None:
    """A text and an image stream, each with its own weight, written into one (B, Lt + Li,
    H*D) sequence and rotated by the tables' rows at their own tokens."""
    rng = np.random.default_rng(12)
    heads, d, text, image = 2, 8, 3, 5
    parts = [rng.standard_normal((2, n, heads * d)).astype(np.float32) for n in (text, image)]
    weights = [rng.uniform(0.5, 2.0, d).astype(np.float32) for _ in parts]
    tables = _tables(rng, text + image, d)
    up = tuple(Tensor.from_numpy(t, device=device) for t in tables)
    out = Tensor.empty((2, text + image, heads * d), np.float32, device=device)
    for start, x, w in zip((0, text), parts, weights):
        rms_norm_rope(Tensor.from_numpy(x, device=device), Tensor.from_numpy(w, device=device),
                      up, heads=heads, out=out, start=start)
    expected = np.concatenate([
        _reference(x, w, tuple(t[start:start + x.shape[1]] for t in tables), heads, 1e-6, False)
        for start, x, w in zip((0, text), parts, weights)], axis=1)
    assert_close(out.numpy(), expected, tol=F32_TOL)


def test_rms_norm_rope_errors(device: gpucore.Device) -> None:
    x = Tensor.from_numpy(np.ones((1, 3, 12), np.float32), device=device)
    tables = tuple(Tensor.from_numpy(np.ones((3, 1, 6), np.float32), device=device)
                   for _ in range(2))
    with pytest.raises(ValueError, match="must split into 5 heads"):
        rms_norm_rope(x, heads=5)
    with pytest.raises(ValueError, match=r"weight must have shape \(6,\)"):
        rms_norm_rope(x, Tensor.from_numpy(np.ones(12, np.float32), device=device), heads=2)
    with pytest.raises(ValueError, match="does not hold 3 positions of 4 features"):
        rms_norm_rope(x, None, tables, heads=3)
    with pytest.raises(ValueError, match="needs an even head_dim"):
        rms_norm_rope(Tensor.from_numpy(np.ones((1, 3, 15), np.float32), device=device),
                      None, tuple(Tensor.from_numpy(np.ones((3, 1, 5), np.float32),
                                                    device=device) for _ in range(2)), heads=3)
    with pytest.raises(ValueError, match="start=1 needs an out tensor"):
        rms_norm_rope(x, heads=2, start=1)
    out = Tensor.empty((1, 4, 12), np.float32, device=device)
    with pytest.raises(ValueError, match="does not fit out"):
        rms_norm_rope(x, heads=2, out=out, start=2)
    with pytest.raises(TypeError, match="float32 Tensor"):
        rms_norm_rope(x, None, (tables[0], np.ones((3, 1, 6))), heads=2)
