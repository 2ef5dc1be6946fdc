"""The direct GEMM of CPU adapters (gpustd/gemm/cpu.py): every layout, ragged and vec4
operands, alpha, beta, biases by column and row and a broadcast batch against float64, and
its sums bit for bit gemm.wgsl's unsplit ones (an fma a k in order, whatever the driver)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import sweep_subset_elsewhere
from support import assert_close, random_array

import gpucore
from gpustd import Tensor
from gpustd.gemm import dispatch, portable
from gpustd.gemm import plan as gemm_plan

LAYOUTS = [(False, False), (False, True), (True, False), (True, True)]  # (trans_a, trans_b)


def _cpu_only(device: gpucore.Device) -> None:
    if device.info.type != "cpu":
        pytest.skip(f"{device.info.label} is a GPU: gemm.wgsl's tiles apply")


def _product(device, a, b, c, bias, *, m, n, k, trans_a, trans_b, alpha, beta, plan,
             bias_rows=False, portable_tile=None) -> np.ndarray:
    up = [None if v is None else Tensor.from_numpy(v, device=device) for v in (a, b, c, bias)]
    kw = dict(m=m, n=n, k=k, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta,
              plan=plan, bias_rows=bias_rows)
    buffers = [None if t is None else t.buffer for t in up]
    if portable_tile is None:
        dispatch.record_gemm(*buffers, **kw)
    else:
        portable.record_gemm(*buffers, tile=portable_tile, splits=1, paired=False, **kw)
    return up[2].numpy()


@pytest.mark.parametrize("trans_a, trans_b", LAYOUTS)
@pytest.mark.parametrize("m, n, k", [(37, 29, 45), (64, 48, 32)])  # scalar, vec4 reads
def test_every_layout_matches_float64_and_the_portable_bits(device: gpucore.Device, trans_a,
                                                            trans_b, m, n, k) -> None:
    _cpu_only(device)
    # OpenGL's code generation (where dot() rounded otherwise): a scalar and a vec4 layout
    sweep_subset_elsewhere(device, (m, trans_a, trans_b) in {(37, False, True), (64, True, False)})
    rng = np.random.default_rng(m * n + k)
    a = random_array(rng, (k, m) if trans_a else (m, k))
    b = random_array(rng, (n, k) if trans_b else (k, n))
    c = random_array(rng, (m, n))
    plan = gemm_plan.batch_plan((), (), (), m * k, k * n)
    cases = [(bias, rows, beta) for bias, rows in ((random_array(rng, (n,)), False),
                                                   (random_array(rng, (m,)), True), (None, False))
             for beta in (0.0, 2.0)]
    for bias, rows, beta in cases:
        kw = dict(m=m, n=n, k=k, trans_a=trans_a, trans_b=trans_b, alpha=0.5, beta=beta,
                  plan=plan, bias_rows=rows)
        got = _product(device, a, b, c, bias, **kw)
        a64 = (a.T if trans_a else a).astype(np.float64)
        want = 0.5 * a64 @ (b.T if trans_b else b) + beta * c
        if bias is not None:
            want = want + (bias[:, None] if rows else bias)
        assert_close(got, want)
        if beta == 0.0:  # with beta the driver may contract alpha * sum + beta * c either way
            same = _product(device, a, b, c, bias, portable_tile=gemm_plan.TILES["64x64"], **kw)
            assert np.array_equal(got, same), (bias is None, rows)


def test_a_broadcast_batch_and_beta_zero_reading_no_c(device: gpucore.Device) -> None:
    """Batch entries from (z // inner, z % inner) strides; beta 0 never reads C (NaN there)."""
    _cpu_only(device)
    rng = np.random.default_rng(5)
    a = random_array(rng, (3, 1, 13, 20))  # broadcast along the second batch dim
    b = random_array(rng, (1, 4, 20, 11))
    plan = gemm_plan.batch_plan((3, 4), (3, 1), (1, 4), 13 * 20, 20 * 11)
    c = np.full((3, 4, 13, 11), np.nan, np.float32)
    got = _product(device, a, b, c, None, m=13, n=11, k=20, trans_a=False, trans_b=False,
                   alpha=1.0, beta=0.0, plan=plan)
    assert_close(got, a.astype(np.float64) @ b)
