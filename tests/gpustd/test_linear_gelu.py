"""gpustd.nn.linear_gelu and linear_gated_add: the GELU, or adaLN-Zero's gated residual, in
the matrix-unit GEMM's epilogue (gemm.matrix_fused), against the two passes with the same tile
(bit for bit on lavapipe's emulated matrix units; within four f16 ulps on an H200 under Dawn,
whose compiler evaluates tanh and the multiply-add differently there) and against float64; the
GELU into a column slice of a wider output; the two passes (or None) where the shape does not
fill a tile."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import emulated_subset, emulated_tiles, matrix_device
from support import assert_close

import gpucore
from gpustd import Tensor, elementwise_kernel
from gpustd.gemm import dispatch, matrix_fused, matrix_tuning
from gpustd.gemm import matrix_units as sm
from gpustd.nn import gelu, linear
from gpustd.nn.linear import linear_gated_add, linear_gelu


@pytest.fixture
def device(device: gpucore.Device) -> gpucore.Device:
    """The adapter's Device with subgroup matrices, emulated where it has none."""
    return matrix_device(device)


# emulated matrix units (CI's lavapipe): both sides' kernels in the planner's tile with one
# fragment a subgroup (conftest.emulated_tile), the same tile for both; 22 -> 8 s of CI's CPU
SMALLER = ((sm, "record_gemm_matrix"), (matrix_fused, "record_gemm_gelu"),
           (matrix_fused, "record_gemm_gated_add"))


def _expected(x, w, bias, approximate):
    """float64 gelu(x w^T + b) of the float16 operands."""
    from scipy.special import erf

    h = x.astype(np.float64) @ w.astype(np.float64).T + (0 if bias is None else bias)
    if approximate == "tanh":
        return 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
    return 0.5 * h * (1 + erf(h / np.sqrt(2)))


def _assert_near(got: Tensor, two: Tensor, rounded: np.ndarray | float = 0.0) -> None:
    """got within four float16 ulps (or 1e-4 near zero, the GELU's far-negative tail) of the
    two passes' result, plus `rounded`: what the two passes' rounding of the product to
    float16 before the epilogue's arithmetic moves the result (the epilogue may keep it in
    f32). On lavapipe the same bits; an H200 under Dawn gave more than one ulp here and there
    (its compiler contracts the epilogue's expression its own way), far below what a wrong
    operand, bias or gate row makes."""
    got_values, two_values = got.numpy().astype(np.float64), two.numpy().astype(np.float64)
    if got.device.info.type == "cpu":  # lavapipe's emulated matrix units: the same bits
        assert np.array_equal(got_values, two_values)
        return
    larger = np.maximum(np.abs(got_values), np.abs(two_values)).astype(np.float16)
    with np.errstate(over="ignore"):  # float16's largest value: an infinite spacing
        slack = np.maximum(4 * np.spacing(larger).astype(np.float64), 1e-4) + rounded
    assert (np.abs(got_values - two_values) <= slack).all()


def _operands(m, n, k, dtype=np.float16, seed=21):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((m, k)).astype(dtype),
            (rng.standard_normal((n, k)) / 4).astype(dtype),
            rng.standard_normal(n).astype(dtype))


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_fused_equals_two_passes(device: gpucore.Device, monkeypatch: pytest.MonkeyPatch,
                                 approximate: str) -> None:
    """Where the matrix units take the shape: gelu(linear(x))'s values, written into columns
    start..start + n of rows of `width`, the other columns untouched."""
    if not (device.has_f16 and sm.available(device)):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")
    emulated_subset(device, approximate == "tanh")
    emulated_tiles(monkeypatch, device, *SMALLER)
    m, n, k, start, width = 128, 192, 64, 40, 300
    x, w, bias = _operands(m, n, k)
    tx, tw, tb = (Tensor.from_numpy(v, device=device) for v in (x, w, bias))
    tile = matrix_tuning.gemm_tile(device, m, n, k, 1, False, True)
    assert matrix_fused.fits(tile, m, n, k)
    alone = gelu(linear(tx.reshape(2, m // 2, k), tw, tb), approximate=approximate)
    fused = linear_gelu(tx.reshape(2, m // 2, k), tw, tb, approximate=approximate)
    _assert_near(fused, alone)
    want = _expected(x, w, bias, approximate)
    assert np.abs(fused.numpy().reshape(m, n) - want).max() / np.abs(want).max() < 2e-3
    canvas = np.full((m, width), 7.0, np.float16)
    out = Tensor.from_numpy(canvas, device=device)
    assert linear_gelu(tx, tw, None, approximate=approximate, out=out, start=start) is out
    got = out.numpy()
    unbiased = gelu(linear(tx, tw), approximate=approximate).numpy()
    _assert_near(Tensor.from_numpy(got[:, start:start + n], device=device),
                 Tensor.from_numpy(unbiased, device=device))
    assert (got[:, :start] == 7).all() and (got[:, start + n:] == 7).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_two_passes_where_no_tile_fits(device: gpucore.Device, dtype) -> None:
    """A shape short of every tile (and float32): gelu(linear(x)), into out's slice too."""
    if dtype == np.float16 and not device.has_f16:
        pytest.skip(f"{device.info.label} has no shader-f16")
    m, n, k = 7, 13, 5
    x, w, bias = _operands(m, n, k, dtype)
    tx, tw, tb = (Tensor.from_numpy(v, device=device) for v in (x, w, bias))
    assert_close(linear_gelu(tx, tw, tb).numpy(), _expected(x, w, bias, "none"), dtype=dtype,
                 tol=1e-5 if dtype == np.float32 else None)
    out = Tensor.from_numpy(np.zeros((m, n + 3), dtype), device=device)
    linear_gelu(tx, tw, tb, approximate="tanh", out=out, start=3)
    assert_close(out.numpy()[:, 3:], _expected(x, w, bias, "tanh"), dtype=dtype,
                 tol=1e-5 if dtype == np.float32 else None)
    assert (out.numpy()[:, :3] == 0).all()


def test_linear_gelu_errors(device: gpucore.Device) -> None:
    tx = Tensor.from_numpy(np.ones((4, 6), np.float32), device=device)
    tw = Tensor.from_numpy(np.ones((5, 6), np.float32), device=device)
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        linear_gelu(tx, tw, approximate="erf")
    with pytest.raises(ValueError, match="start=2 needs an out tensor"):
        linear_gelu(tx, tw, start=2)
    out = Tensor.from_numpy(np.zeros((4, 8), np.float32), device=device)
    with pytest.raises(ValueError, match=r"5 features from 4 do not fit out \(4, 8\)"):
        linear_gelu(tx, tw, out=out, start=4)


@elementwise_kernel
def _gated_add_clipped(residual, gate, y):  # the DiTs' (diffusion.models.transformer_ops)
    out = float(residual) + float(gate) * float(y)
    return np.float16(out if math.isnan(out) else min(max(out, -65504.0), 65504.0))


def test_gated_add_equals_two_passes(device: gpucore.Device,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """clip(residual + gate * linear(x)) in the epilogue: linear then the gated kernel's
    values, each batch entry its own gate row, the clip reached, the gate read in place from
    a wider row's columns (gate_at) the same; None where no tile fits."""
    if not (device.has_f16 and sm.available(device)):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")
    emulated_tiles(monkeypatch, device, *SMALLER)
    batch, length, n, k = 2, 64, 128, 64
    x, w, bias = _operands(batch * length, n, k)
    rng = np.random.default_rng(22)
    y = (x.astype(np.float64) @ w.astype(np.float64).T + bias).reshape(batch, length, n)
    residual = (rng.standard_normal((batch, length, n)) * 3).astype(np.float16)
    past = y > 0.5  # the clip: float16's largest plus gate * y
    residual[past] = 65504
    gate = rng.uniform(0.5, 2.0, (batch, 1, n)).astype(np.float16)
    tx, tw, tb, tres, tgate = (Tensor.from_numpy(v, device=device) for v in (
        x.reshape(batch, length, k), w, bias, residual, gate))
    got = linear_gated_add(tx, tw, tb, tres, tgate)
    assert got is not None and got.dtype == np.float16
    product = linear(tx, tw, tb)
    two = _gated_add_clipped(tres, tgate, product)
    # the two passes round x w^T + b to float16 before the gated add; where the residual
    # cancels it, that rounding (gate * one ulp of the product) is many ulps of the sum (an
    # H100 under Dawn: the fused epilogue keeps the product in f32 there)
    _assert_near(got, two, np.abs(gate.astype(np.float64))
                 * np.spacing(np.abs(product.numpy())).astype(np.float64))
    want = np.clip(residual + gate.astype(np.float64) * y, -65504, 65504)
    assert np.abs(got.numpy() - want).max() / np.abs(want).max() < 2e-3
    assert np.isfinite(got.numpy()).all() and (got.numpy()[past] == 65504).all()
    residual[0, 0, :5] = np.nan  # kept NaN, as torch's clamp keeps it (a GPU's max drops it)
    kept = linear_gated_add(tx, tw, tb, Tensor.from_numpy(residual, device=device), tgate)
    assert kept is not None
    assert np.isnan(kept.numpy()[0, 0, :5]).all() and np.isfinite(kept.numpy()[0, 0, 5:]).all()
    short = Tensor.from_numpy(x[:7].reshape(1, 7, k), device=device)
    assert linear_gated_add(short, tw, tb, Tensor.from_numpy(residual[:1, :7], device=device),
                            Tensor.from_numpy(gate[:1], device=device)) is None
    with pytest.raises(ValueError, match=r"must be \(2, 64, 128\) and \(2, 1, 128\)"):
        linear_gated_add(tx, tw, tb, tres, tres)
    # the gate read in place from the middle of a wider row (the adaLN output): the same bits
    wide = rng.standard_normal((batch, 1, 3 * n)).astype(np.float16)
    wide[:, :, n:2 * n] = gate
    twide = Tensor.from_numpy(wide, device=device)
    at = linear_gated_add(tx, tw, tb, tres, twide, gate_at=n)
    assert at is not None and np.array_equal(at.numpy(), got.numpy())
    with pytest.raises(ValueError, match=r"columns from gate_at=257"):
        linear_gated_add(tx, tw, tb, tres, twide, gate_at=2 * n + 1)


def test_gated_epilogue_not_on_big_f16_accumulating_tiles(
        device: gpucore.Device, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the GEMM would run in an f16-accumulating 256 x 256 tile, linear_gated_add says
    None (the two passes are faster there) while the GELU epilogue keeps the tile; other
    tiles, and f32 accumulators, keep the gated epilogue too."""
    if not (device.has_f16 and sm.available(device)):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")
    m, n, k = 256, 256, 64
    chosen = {"tile": sm.ACC16_TILES["256x256g8"]}
    monkeypatch.setattr(matrix_tuning, "gemm_tile", lambda *a, **kw: chosen["tile"])
    assert dispatch.fused_tile(device, np.float16, m, n, k, "gated") is None
    assert dispatch.fused_tile(device, np.float16, m, n, k) is chosen["tile"]
    tx, tres = (Tensor.from_numpy(np.ones((1, m, s), np.float16), device=device)
                for s in (k, n))
    tw = Tensor.from_numpy(np.ones((n, k), np.float16), device=device)
    tgate = Tensor.from_numpy(np.ones((1, 1, n), np.float16), device=device)
    assert linear_gated_add(tx, tw, None, tres, tgate) is None
    for tile in (sm.ACC16_TILES["256x128"], sm.TILES["128x128"]):
        chosen["tile"] = tile
        assert dispatch.fused_tile(device, np.float16, m, n, k, "gated") is tile
    monkeypatch.setattr(dispatch, "GATED_ON_BIG_ACC16", True)
    chosen["tile"] = sm.ACC16_TILES["256x256g8"]
    assert dispatch.fused_tile(device, np.float16, m, n, k, "gated") is chosen["tile"]
