"""gpustd.linalg against float64 numpy on every adapter: BLAS 1/2/3, batching, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import sweep_subset_elsewhere
from hypothesis import given, settings
from hypothesis import strategies as st
from support import assert_close, random_array

import gpucore
from gpustd import Tensor, linalg
from gpustd.gemm import plan as gemm_plan
from gpustd.gemm import portable

AWKWARD = [1, 2, 3, 4, 5, 7, 13, 16, 31, 33, 37, 64, 65, 67, 70]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(52)  # seeded: a failure shows again on the next run


def up(device: gpucore.Device, array: np.ndarray, dtype: object = np.float32) -> Tensor:
    return Tensor.from_numpy(np.asarray(array, dtype=dtype), device=device)


def op(x: np.ndarray, trans: bool) -> np.ndarray:
    return np.swapaxes(x, -1, -2) if trans else x


# -- GEMM ---------------------------------------------------------------------------------
def check_forced(device, rng, trans_a, trans_b, cases, **force):
    """portable.record_gemm in the configuration given (`force`: tile),
    C = 0.5 op(A) op(B) + 2 C + bias.

    Positive operands: a one-element result must not cancel to near zero (relative error)."""
    for m, n, k, splits, paired in cases:
        a = random_array(rng, (k, m) if trans_a else (m, k), low=0.1)
        b = random_array(rng, (n, k) if trans_b else (k, n), low=0.1)
        bias = random_array(rng, (n,), low=0.1)
        c = up(device, random_array(rng, (m, n), low=0.1))
        expected = 0.5 * op(a, trans_a).astype(np.float64) @ op(b, trans_b) + 2.0 * c.numpy() + bias
        portable.record_gemm(up(device, a).buffer, up(device, b).buffer, c.buffer,
                             up(device, bias).buffer, m=m, n=n, k=k, trans_a=trans_a,
                             trans_b=trans_b, alpha=0.5, beta=2.0,
                             plan=gemm_plan.batch_plan((), (), (), m * k, k * n),
                             splits=splits, paired=paired, **force)
        assert_close(c.numpy(), expected)


LAYOUTS = [(False, False), (False, True), (True, False), (True, True)]  # (trans_a, trans_b)


def _diagonal(tiles: list[str]) -> set[tuple[str, bool, bool]]:
    """Tile i with layout i mod 4: every tile and every layout once (the subset that runs on
    adapters after the first: see conftest.sweep_subset_elsewhere)."""
    return {(tile, *LAYOUTS[i % len(LAYOUTS)]) for i, tile in enumerate(tiles)}


@pytest.mark.parametrize("tile", list(gemm_plan.TILES))
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_every_tile_and_layout(device, rng, tile, trans_a, trans_b):
    """Each tile shape on ragged sizes (scalar loads) and 4-aligned ones (vec4): all 20 on the
    first adapter, each tile and each layout once on the others."""
    sweep_subset_elsewhere(device, (tile, trans_a, trans_b) in _diagonal(list(gemm_plan.TILES)))
    cases = [(37, 41, 19, 1, False), (36, 68, 20, 1, False), (1, 1, 1, 1, False),
             (130, 3, 9, 1, False)]
    check_forced(device, rng, trans_a, trans_b, cases, tile=gemm_plan.TILES[tile])


@pytest.mark.parametrize("tile", ["128x64", "64x64t4"])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_split_k_and_paired_loop(device, rng, tile, trans_a, trans_b):
    """Split-K (alpha, beta and bias in its second pass; uneven last split) and the paired
    main loop (odd and even K-tile counts), ragged and 4-aligned. All 8 on the first
    adapter, each tile once on the others (their layouts differ from test_every_tile's)."""
    sweep_subset_elsewhere(device, (tile, trans_a, trans_b) in {("128x64", True, False),
                                                                ("64x64t4", False, True)})
    # K 301, not a multiple of 4: scalar loads, the kernel test_every_tile_and_layout's ragged
    # cases built (K 300 read A in vec4s, a kernel of its own: 0.4-0.8 s of llvmpipe a tile)
    cases = [(36, 68, 44, 1, True), (36, 68, 100, 3, False), (37, 41, 70, 4, True),
             (3, 5, 301, 12, False)]
    check_forced(device, rng, trans_a, trans_b, cases, tile=gemm_plan.TILES[tile])


def test_tile_validation():
    assert gemm_plan.Tile(128, 64, 8, 8, 8).invocations == 128
    for bad in [(128, 128, 12, 8, 8), (64, 64, 8, 2, 4), (64, 64, 8, 4, 4), (32, 32, 8, 8, 8)]:
        with pytest.raises(ValueError, match="unsupported GEMM tile"):
            gemm_plan.Tile(*bad)


def test_plan_gemm_shapes():
    """The H200-tuned plan: big outputs unsplit, small grids split K, tiny M in 32x32 tiles."""
    big = gemm_plan.plan_gemm(4096, 4096, 4096, 1)
    assert (big.tile, big.splits, big.paired) == (gemm_plan.TILES["64x64"], 1, True)
    assert gemm_plan.plan_gemm(8192, 320, 320, 1) == gemm_plan.Plan(gemm_plan.TILES["64x64t4"],
                                                                     1, False)
    mid = gemm_plan.plan_gemm(512, 1280, 1280, 1)
    assert mid.tile == gemm_plan.TILES["128x128"] and mid.splits == 3
    tiny = gemm_plan.plan_gemm(2, 1280, 1280, 1)
    assert tiny.tile == gemm_plan.TILES["32x32"] and tiny.splits == 12
    for m, n, k in [(1, 1, 1), (7, 5, 8), (3, 3, 100_000), (100_000, 3, 3)]:
        plan = gemm_plan.plan_gemm(m, n, k, 1)
        assert 1 <= plan.splits <= 12 and plan.splits <= max(1, k // 32)


def test_split_k_batched_with_bias(device, rng, monkeypatch):
    """Split-K over a broadcast batch, across several dispatches (tiny grid limit), with bias."""
    monkeypatch.setitem(device.limits, "max-compute-workgroups-per-dimension", 5)
    a, b = random_array(rng, (3, 2, 600)), random_array(rng, (600, 37))
    bias = random_array(rng, (37,))
    assert gemm_plan.plan_gemm(2, 37, 600, 3).splits > 1
    got = linalg.matmul(up(device, a), up(device, b), bias=up(device, bias))
    assert_close(got.numpy(), a.astype(np.float64) @ b + bias)


def test_split_k_gemm_alpha_beta_and_nan(device, rng):
    a, b, c0 = random_array(rng, (300, 5)), random_array(rng, (7, 300)), random_array(rng, (5, 7))
    assert gemm_plan.plan_gemm(5, 7, 300, 1).splits > 1
    c = up(device, c0)
    linalg.gemm(1.5, up(device, a), up(device, b), -0.5, c, trans_a=True, trans_b=True)
    assert_close(c.numpy(), 1.5 * a.T.astype(np.float64) @ b.T - 0.5 * c0)
    c = up(device, np.full((5, 7), np.nan))  # beta = 0: the second pass must not read C
    linalg.gemm(2.0, up(device, a.T.copy()), up(device, b.T.copy()), 0.0, c)
    assert_close(c.numpy(), 2.0 * a.T.astype(np.float64) @ b.T)


def test_split_k_falls_back_when_partials_exceed_binding(device, rng, monkeypatch):
    """Partial sums above the storage binding limit: one split instead of a DeviceLimitError."""
    a, b = random_array(rng, (40, 256)), random_array(rng, (256, 40))
    assert gemm_plan.plan_gemm(40, 40, 256, 1).splits * 40 * 40 * 4 > 45_000 > a.nbytes
    monkeypatch.setitem(device.limits, "max-storage-buffer-binding-size", 45_000)
    assert_close(linalg.matmul(up(device, a), up(device, b)).numpy(), a.astype(np.float64) @ b)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(m=st.sampled_from(AWKWARD), n=st.sampled_from(AWKWARD), k=st.sampled_from(AWKWARD),
       trans_a=st.booleans(), trans_b=st.booleans(), with_bias=st.booleans())
def test_matmul_shapes(device, m, n, k, trans_a, trans_b, with_bias):
    """Ragged shapes; positive operands so tiny results cannot cancel (signs: tests below).
    The shapes and values are the same on every run (a failure shows again)."""
    rng = np.random.default_rng([m, n, k, trans_a, trans_b, with_bias])
    a = random_array(rng, (k, m) if trans_a else (m, k), low=0.1)
    b = random_array(rng, (n, k) if trans_b else (k, n), low=0.1)
    bias = random_array(rng, (n,), low=0.1) if with_bias else None
    expected = op(a, trans_a).astype(np.float64) @ op(b, trans_b)
    if with_bias:
        expected = expected + bias
    got = linalg.matmul(up(device, a), up(device, b), trans_a=trans_a, trans_b=trans_b,
                        bias=None if bias is None else up(device, bias))
    assert_close(got.numpy(), expected)


@pytest.mark.parametrize(("a_shape", "b_shape"), [
    ((3, 5, 7), (7, 4)),               # one weight for every batch entry
    ((5, 7), (3, 7, 4)),
    ((2, 3, 5, 7), (2, 3, 7, 4)),      # plain batch, collapsed to one level
    ((2, 1, 5, 7), (1, 3, 7, 4)),      # two broadcast levels
    ((2, 1, 3, 1, 5, 7), (1, 4, 1, 2, 7, 4)),  # four levels: several dispatch groups
    ((7,), (7, 4)), ((3, 5, 7), (7,)), ((7,), (7,)), ((7,), (2, 7, 3)),
])
def test_matmul_broadcasting(device, rng, a_shape, b_shape):
    a, b = random_array(rng, a_shape, low=0.1), random_array(rng, b_shape, low=0.1)
    got = linalg.matmul(up(device, a), up(device, b))
    assert_close(got.numpy(), np.matmul(a.astype(np.float64), b))


def test_batched_transposes_and_bias(device, rng):
    x, w, bias = random_array(rng, (2, 3, 9, 20)), random_array(rng, (3, 11, 20)), \
        random_array(rng, (11,))
    got = linalg.matmul(up(device, x), up(device, w), trans_b=True, bias=up(device, bias))
    assert_close(got.numpy(), x.astype(np.float64) @ np.swapaxes(w, -1, -2) + bias)
    a = random_array(rng, (4, 20, 9))
    got = linalg.matmul(up(device, a), up(device, w[0]), trans_a=True, trans_b=True)
    assert_close(got.numpy(), np.swapaxes(a, -1, -2).astype(np.float64) @ w[0].T)


def test_batch_beyond_grid_limit(device, rng, monkeypatch):
    """Batches past max-compute-workgroups-per-dimension are split into several dispatches."""
    monkeypatch.setitem(device.limits, "max-compute-workgroups-per-dimension", 3)
    a, b = random_array(rng, (7, 5, 6)), random_array(rng, (6, 4))
    assert_close(linalg.matmul(up(device, a), up(device, b)).numpy(), a.astype(np.float64) @ b)


def test_matmul_out_and_large_tiles(device, rng):
    a, b = random_array(rng, (257, 131)), random_array(rng, (131, 260))
    out = Tensor.empty((257, 260), device=device)
    assert linalg.matmul(up(device, a), up(device, b), out=out) is out
    assert_close(out.numpy(), a.astype(np.float64) @ b)


def test_gemm_alpha_beta(device, rng):
    a, b, c0 = random_array(rng, (9, 5)), random_array(rng, (7, 9)), random_array(rng, (5, 7))
    c = up(device, c0)
    got = linalg.gemm(1.5, up(device, a), up(device, b), -0.5, c, trans_a=True, trans_b=True)
    assert got is c
    assert_close(c.numpy(), 1.5 * a.T.astype(np.float64) @ b.T - 0.5 * c0)


def test_gemm_beta_zero_ignores_nan(device, rng):
    """BLAS: with beta = 0, C is not read, so NaN in it must not leak into the result."""
    a, b = random_array(rng, (6, 3)), random_array(rng, (3, 5))
    c = up(device, np.full((6, 5), np.nan))
    linalg.gemm(2.0, up(device, a), up(device, b), 0.0, c)
    assert_close(c.numpy(), 2.0 * a.astype(np.float64) @ b)
    assert_close(linalg.gemm(1.0, a, b).numpy(), a.astype(np.float64) @ b)  # numpy inputs


def test_empty_k_gives_beta_c_plus_bias(device, rng):
    assert gemm_plan.plan_gemm(4, 3, 0, 1).tile == gemm_plan.TILES["32x32"]  # the cheapest build
    a, b = np.zeros((4, 0), np.float32), np.zeros((0, 3), np.float32)
    bias = random_array(rng, (3,))
    got = linalg.matmul(up(device, a), up(device, b), bias=up(device, bias))
    assert_close(got.numpy(), np.broadcast_to(bias, (4, 3)).astype(np.float64))


def test_matmul_f16(f16_device, rng):
    a, b = random_array(rng, (2, 33, 70), np.float16), random_array(rng, (70, 37), np.float16)
    bias = random_array(rng, (37,), np.float16)
    got = linalg.matmul(up(f16_device, a, np.float16), up(f16_device, b, np.float16),
                        bias=up(f16_device, bias, np.float16))
    assert got.dtype == np.float16
    assert_close(got.numpy(), a.astype(np.float64) @ b + bias, dtype=np.float16)
    w = random_array(rng, (37, 70), np.float16)
    got = linalg.matmul(up(f16_device, a, np.float16), up(f16_device, w, np.float16),
                        trans_b=True)
    assert_close(got.numpy(), a.astype(np.float64) @ w.T.astype(np.float64), dtype=np.float16)
    x = random_array(rng, (3, 700), np.float16)  # split-K: f32 partial sums, f16 result
    w = random_array(rng, (37, 700), np.float16)
    assert gemm_plan.plan_gemm(3, 37, 700, 1).splits > 1
    got = linalg.matmul(up(f16_device, x, np.float16), up(f16_device, w, np.float16),
                        trans_b=True, bias=up(f16_device, bias, np.float16))
    assert got.dtype == np.float16
    assert_close(got.numpy(), x.astype(np.float64) @ w.T.astype(np.float64) + bias,
                 dtype=np.float16)


# -- level 1 and 2 ------------------------------------------------------------------------
def test_reductions_a_million(device, rng):
    """Over 10^6 elements the two-pass tree keeps float32 error near one rounding."""
    n = 1_000_003
    x, y = random_array(rng, n), random_array(rng, n)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    got = float(linalg.dot(up(device, x), up(device, y)).numpy())
    assert abs(got - x64 @ y64) <= 1e-6 * np.abs(x64 * y64).sum()
    assert_close(linalg.asum(up(device, x)).numpy(), np.abs(x64).sum())
    assert_close(linalg.norm(up(device, x)).numpy(), np.linalg.norm(x64))


@pytest.mark.parametrize("n", [1, 2, 255, 256, 257, 1031])
def test_reductions_small(device, rng, n):
    x, y = random_array(rng, (n,)), random_array(rng, (n,))
    x64 = x.astype(np.float64)
    got = float(linalg.dot(up(device, x), up(device, y)).numpy())
    assert abs(got - x64 @ y) <= 1e-6 * np.abs(x64 * y).sum()  # signed sums may cancel
    assert_close(linalg.asum(x).numpy(), np.abs(x64).sum())
    assert_close(linalg.norm(up(device, x)).numpy(), np.linalg.norm(x64))


def test_norm_does_not_overflow(device, rng):
    """Squares of 1e30 overflow float32; the scaled sum of squares does not."""
    x = random_array(rng, (5000,), low=0.5, high=1.0) * np.float32(1e30)
    x[17] = 0.0
    assert_close(linalg.norm(up(device, x)).numpy(), np.linalg.norm(x.astype(np.float64)))
    assert float(linalg.norm(up(device, np.zeros(9))).numpy()) == 0.0


def test_level1_f16(f16_device, rng):
    x, y = random_array(rng, (4099,), np.float16), random_array(rng, (4099,), np.float16)
    gx, gy = up(f16_device, x, np.float16), up(f16_device, y, np.float16)
    x64 = x.astype(np.float64)
    assert abs(float(linalg.dot(gx, gy).numpy()) - x64 @ y) <= 1e-2 * np.abs(x64 * y).sum()
    assert_close(linalg.norm(gx).numpy(), np.linalg.norm(x64), dtype=np.float16)
    assert_close(linalg.axpy(0.5, gx, gy).numpy(), 0.5 * x64 + y, dtype=np.float16)


def test_axpy_scal_in_place(device, rng):
    x, y = random_array(rng, (3, 1001)), random_array(rng, (3, 1001))
    gy = up(device, y)
    assert linalg.axpy(-1.5, up(device, x), gy) is gy
    assert_close(gy.numpy(), -1.5 * x.astype(np.float64) + y)
    gx = up(device, x)
    assert linalg.scal(3.0, gx) is gx
    assert_close(gx.numpy(), 3.0 * x.astype(np.float64))


@pytest.mark.parametrize("trans", [False, True])
@pytest.mark.parametrize(("m", "n"), [(1, 1), (37, 53), (300, 7), (5, 300)])
def test_gemv(device, rng, trans, m, n):
    a = random_array(rng, (m, n), low=0.1)  # positive: a 1-element result cannot cancel
    x = random_array(rng, (m,) if trans else (n,), low=0.1)
    y0 = random_array(rng, (n,) if trans else (m,), low=0.1)
    y = up(device, y0)
    got = linalg.gemv(2.0, up(device, a), up(device, x), 0.5, y, trans=trans)
    assert got is y
    assert_close(y.numpy(), 2.0 * op(a, trans).astype(np.float64) @ x + 0.5 * y0)
    fresh = linalg.gemv(1.0, up(device, a), up(device, x), trans=trans)
    assert_close(fresh.numpy(), op(a, trans).astype(np.float64) @ x)


# -- errors ---------------------------------------------------------------------------------
def test_shape_errors_name_the_shapes(device, rng):
    a, b = up(device, random_array(rng, (3, 4))), up(device, random_array(rng, (5, 6)))
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(5, 6\)"):
        linalg.matmul(a, b)
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\(5, 4, 6\)"):
        linalg.matmul(up(device, random_array(rng, (2, 3, 4))),
                      up(device, random_array(rng, (5, 4, 6))))
    with pytest.raises(ValueError, match="bias"):
        linalg.matmul(a, up(device, random_array(rng, (4, 6))), bias=up(device, np.ones(4)))
    with pytest.raises(ValueError, match="out"):
        linalg.matmul(a, a, trans_b=True, out=Tensor.empty((4, 4), device=device))
    with pytest.raises(ValueError, match="share memory"):
        linalg.matmul(a, up(device, random_array(rng, (4, 4))), out=a)
    with pytest.raises(ValueError, match=r"c must have shape \(3, 6\)"):
        linalg.gemm(1.0, a, up(device, random_array(rng, (4, 6))), 1.0,
                    Tensor.empty((6, 3), device=device))
    with pytest.raises(ValueError, match="beta"):
        linalg.gemm(1.0, a, a, 1.0, trans_b=True)
    with pytest.raises(ValueError, match="same shape"):
        linalg.dot(up(device, np.ones(3)), up(device, np.ones(4)))
    with pytest.raises(ValueError, match="length 4"):
        linalg.gemv(1.0, a, up(device, np.ones(3)))
    with pytest.raises(ValueError, match="at least 1-D"):
        linalg.matmul(Tensor.empty((), device=device), a)


def test_dtype_errors(device, rng):
    a = up(device, random_array(rng, (3, 4)))
    with pytest.raises(TypeError, match="float32 or float16"):
        linalg.matmul(a, Tensor.from_numpy(np.ones((4, 2), np.int32), device=device))
    if device.has_f16:
        with pytest.raises(TypeError, match="share one dtype"):
            linalg.matmul(a, up(device, np.ones((4, 2)), np.float16))
    with pytest.raises(TypeError, match="Tensor"):
        linalg.axpy(1.0, np.ones(3), np.ones(3))


def test_refuses_operands_above_binding_limit(device, rng, monkeypatch):
    """Operands are bound whole: past the limit, DeviceLimitError names the operand first."""
    monkeypatch.setitem(device.limits, "max-storage-buffer-binding-size", 1024)
    big, small = up(device, random_array(rng, (20, 20))), up(device, random_array(rng, (20, 3)))
    with pytest.raises(gpucore.DeviceLimitError, match=r"matmul: a \(20, 20\)"):
        linalg.matmul(big, small)
    with pytest.raises(gpucore.DeviceLimitError, match="out"):
        linalg.matmul(small, up(device, random_array(rng, (3, 40))))
    with pytest.raises(gpucore.DeviceLimitError, match="max-storage-buffer-binding-size"):
        linalg.dot(big, big)


# -- pieces that need no device -------------------------------------------------------------
def test_batch_plan_collapses_dims():
    plan = gemm_plan.batch_plan((2, 3), (2, 3), (2, 3), 10, 20)
    assert (plan.outer, plan.inner, plan.inner_strides, plan.groups) == (1, 6, (10, 20), ((0, 0),))
    plan = gemm_plan.batch_plan((4, 5), (), (4, 5), 10, 20)
    assert (plan.inner, plan.inner_strides) == (20, (0, 20))
    plan = gemm_plan.batch_plan((2, 4, 3, 5), (2, 1, 3, 1), (1, 4, 1, 5), 1, 1)
    assert plan.count == 120 and len(plan.groups) == 8
    assert plan.groups[:2] == ((0, 0), (0, 5))  # row-major over the leading dims


def test_a_cpu_adapter_runs_unsplit_float32_products_as_one_split(first_device, rng,
                                                                   monkeypatch):
    """On a CPU adapter a float32 product takes the split-K kernel and its finishing pass
    even unsplit (one kernel fewer for llvmpipe to compile per layout), bit for bit the
    unsplit kernel's alpha * sum + beta * C + bias."""
    device = first_device
    if device.info.type != "cpu":
        pytest.skip(f"{device.info.label} is a GPU: an unsplit product keeps its kernel")
    a, b, bias, c0 = (random_array(rng, s) for s in ((37, 20), (41, 20), (41,), (37, 41)))
    splits = []
    built = portable.gemm_kernel
    monkeypatch.setattr(portable, "gemm_kernel",
                        lambda *args, **kw: (splits.append(kw["split"]), built(*args, **kw))[1])

    def product() -> np.ndarray:
        c = up(device, c0)
        portable.record_gemm(up(device, a).buffer, up(device, b).buffer, c.buffer,
                             up(device, bias).buffer, m=37, n=41, k=20, trans_a=False,
                             trans_b=True, alpha=0.5, beta=2.0,
                             plan=gemm_plan.batch_plan((), (), (), 37 * 20, 20 * 41),
                             tile=gemm_plan.TILES["64x64t4"], splits=1, paired=False)
        return c.numpy()

    on_cpu = product()
    assert_close(on_cpu, 0.5 * a.astype(np.float64) @ b.T + 2.0 * c0 + bias)
    monkeypatch.setattr(device, "info", dataclasses.replace(device.info, type="discrete"))
    assert np.array_equal(product(), on_cpu) and splits == [True, False]


def test_a_cpu_adapter_reads_the_layout_from_the_params(first_device, rng, monkeypatch):
    """On a CPU adapter the split-K kernel reads trans_a and trans_b from the params: the four
    layouts share one kernel (one compile for llvmpipe, not one each), and each product is
    its own layout's kernel's bit for bit (ragged m and n, alpha, beta and a bias)."""
    device = first_device
    if device.info.type != "cpu":
        pytest.skip(f"{device.info.label} is a GPU: each layout keeps its kernel")
    m, n, k = 36, 44, 20
    bias, c0 = random_array(rng, (n,)), random_array(rng, (m, n))
    built = portable.gemm_kernel

    def product(trans_a: bool, trans_b: bool, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        c = up(device, c0)
        portable.record_gemm(up(device, a).buffer, up(device, b).buffer, c.buffer,
                             up(device, bias).buffer, m=m, n=n, k=k, trans_a=trans_a,
                             trans_b=trans_b, alpha=0.5, beta=2.0,
                             plan=gemm_plan.batch_plan((), (), (), m * k, k * n),
                             tile=gemm_plan.TILES["64x64t4"], splits=1, paired=False)
        return c.numpy()

    layouts = [(ta, tb, random_array(rng, (k, m) if ta else (m, k)),
                random_array(rng, (n, k) if tb else (k, n)))
               for ta in (False, True) for tb in (False, True)]
    monkeypatch.setattr(portable, "gemm_kernel", lambda *args, **kw: built(
        *args, **{**kw, "layout_in_params": False}))
    own = [product(*layout) for layout in layouts]
    kernels: list = []
    monkeypatch.setattr(portable, "gemm_kernel", lambda *args, **kw: (
        kernels.append(built(*args, **kw)), kernels[-1])[1])
    got = [product(*layout) for layout in layouts]
    assert len(kernels) == 4 and all(x is kernels[0] for x in kernels)
    assert all(np.array_equal(g, o) for g, o in zip(got, own))
    _, _, a, b = layouts[3]
    assert_close(got[3], 0.5 * a.T.astype(np.float64) @ b.T + 2.0 * c0 + bias)
