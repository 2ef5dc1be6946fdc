"""gpustd.nn.rms_norm_rope against numpy in float64: the per-head RMS norm, the rotation in
both pair layouts, each alone and together, written into a joint buffer at a token offset,
over awkward sizes (odd head dims, one token, rows that do not fill a workgroup); and
rms_norm_modulate, the norm with adaLN's modulation after it."""

from __future__ import annotations

import numpy as np
import pytest
from support import assert_close

import gpucore
from gpustd import Tensor, elementwise_kernel
from gpustd.nn import rms_norm_modulate, rms_norm_rope

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


@elementwise_kernel
def _modulate(x, shift, scale):  # the DiTs' compiled modulate (diffusion's transformer_ops)
    return x * (1.0 + scale) + shift


@elementwise_kernel
def _scaled(x, scale):  # Z-Image's scale-only modulation
    return x * (1.0 + scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("d,weight_dtype,centred,shifted", [
    (72, np.float32, True, True),  # Krea 2: a float32 zero-centred weight, shift and scale
    (300, "x", False, False),  # Z-Image: a weight of x's dtype, the scale alone
    (45, None, False, True),  # no weight
])
def test_rms_norm_modulate(device: gpucore.Device, dtype, d, weight_dtype, centred,
                           shifted) -> None:
    """The norm and adaLN's modulation in one pass, its scale and shift read in place from one
    (B, 1, 6 * D) adaLN output: near float64, and the bits of the two passes it replaces (a
    zero-centred weight's 1 + weight made by a pass of its own there)."""
    dtype = _dtype(device, dtype)
    rng = np.random.default_rng(14)
    x = (3 * rng.standard_normal((2, 13, d)) + 1).astype(dtype)
    kind = dtype if weight_dtype == "x" else weight_dtype
    weight = None if kind is None else rng.uniform(-0.5, 0.5 if centred else 2.0, d).astype(kind)
    whole = rng.standard_normal((2, 1, 6 * d)).astype(dtype)
    up = [None if a is None else Tensor.from_numpy(a, device=device) for a in (x, weight, whole)]
    tx, tweight, twhole = up
    got = rms_norm_modulate(tx, tweight, twhole if shifted else None, twhole, eps=1e-5,
                            zero_centred=centred, shift_at=4 * d, scale_at=d)
    assert got.dtype == dtype and got.shape == x.shape
    scale = whole[..., d:2 * d].astype(np.float64)
    shift = whole[..., 4 * d:5 * d].astype(np.float64) if shifted else 0.0
    normed = _reference(x, None if weight is None else weight.astype(np.float64) + centred,
                        None, 1, 1e-5, False)
    expected = normed * (1 + scale) + shift
    assert_close(got.numpy(), expected, dtype=dtype, tol=F32_TOL if dtype == np.float32 else None)
    assert np.abs(expected - normed).mean() > 0.5  # the modulation visibly matters
    # the two passes: rms_norm_rope (after a + 1 pass) then the compiled modulate
    scale_weight = None if weight is None else (tweight + 1.0 if centred else tweight)
    two = rms_norm_rope(tx, scale_weight, eps=1e-5)
    chunk = [Tensor.from_numpy(np.ascontiguousarray(whole[..., i * d:(i + 1) * d]), device=device)
             for i in (1, 4)]
    two = _modulate(two, chunk[1], chunk[0]) if shifted else _scaled(two, chunk[0])
    assert np.array_equal(got.numpy(), two.numpy())


def test_rms_norm_zero_centred(device: gpucore.Device) -> None:
    """rms_norm_rope's zero-centred weight: the bits of the weight + 1 made first."""
    rng = np.random.default_rng(15)
    x = Tensor.from_numpy(rng.standard_normal((1, 9, 4 * 10)).astype(np.float32), device=device)
    weight = Tensor.from_numpy(rng.uniform(-0.5, 0.5, 10).astype(np.float32), device=device)
    tables = tuple(Tensor.from_numpy(t, device=device) for t in _tables(rng, 9, 10))
    got = rms_norm_rope(x, weight, tables, heads=4, zero_centred=True)
    assert np.array_equal(got.numpy(), rms_norm_rope(x, weight + 1.0, tables, heads=4).numpy())
    with pytest.raises(ValueError, match="zero_centred=True needs the weight"):
        rms_norm_rope(x, heads=4, zero_centred=True)


def test_rms_norm_modulate_errors(device: gpucore.Device) -> None:
    x = Tensor.from_numpy(np.ones((2, 3, 8), np.float32), device=device)
    whole = Tensor.from_numpy(np.ones((2, 1, 16), np.float32), device=device)
    with pytest.raises(ValueError, match="zero_centred=True needs the weight"):
        rms_norm_modulate(x, None, whole, whole, zero_centred=True)
    with pytest.raises(ValueError, match=r"weight must have shape \(8,\)"):
        rms_norm_modulate(x, whole.reshape(-1), whole, whole)
    with pytest.raises(ValueError, match="scale's 8 columns from scale_at=9 do not fit"):
        rms_norm_modulate(x, None, None, whole, scale_at=9)
    with pytest.raises(ValueError, match=r"shift must have shape \(2, 1, 8\)"):
        rms_norm_modulate(x, None, whole.reshape(2, 16, 1), whole)
