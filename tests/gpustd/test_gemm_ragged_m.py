"""The matrix-unit GEMM's kernel for a ragged M (gpustd/gemm/matrix_gemm_source.py, dims
(None, n, k)): N and K fill the tile, M does not. Its WGSL (n, k constants, no bound check
but C's rows, A's row clamped), and its results: against float64 and bit for bit the checked
kernel's on the same tile (the same sums in the same order), on every adapter with matrix
units, emulated where there are none (conftest.matrix_device)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import emulated_tile, emulated_tiles, matrix_device

import gpucore
from gpucore import _wgsl
from gpustd import Tensor, linalg
from gpustd.gemm import matrix_units as sm
from gpustd.gemm import plan as gemm_plan

# A direct tile small enough for lavapipe (32 x 32, f16 accumulators): its full tiles store
# straight from the accumulators, the last row of tiles through the staged epilogue.
DIRECT = sm.MatrixTile(2, 1, 1, 2, bk=16, acc="f16", prefetch=False, direct=True)


@pytest.fixture
def device(device: gpucore.Device) -> gpucore.Device:
    """Here, the adapter's Device with subgroup matrices, emulated where it has none."""
    return matrix_device(device)


@pytest.mark.nodevice
def test_kernel_dims() -> None:
    tile = sm.TILES["64x128"]
    assert sm.kernel_dims(tile, 192, 256, 96) == (192, 256, 96)
    assert sm.kernel_dims(tile, 4429, 256, 96) == (None, 256, 96)
    assert sm.kernel_dims(tile, 4429, 256, 96, ragged=False) is None
    assert sm.kernel_dims(tile, 192, 200, 96) is None  # N ragged: checked
    assert sm.kernel_dims(tile, 192, 256, 80) is None  # K ragged: checked


@pytest.mark.nodevice
@pytest.mark.parametrize("trans_a", [False, True])
def test_ragged_m_kernel_checks_rows_only(trans_a: bool) -> None:
    """n and k constants, m a uniform; no branch in either load (A's M coordinate clamped);
    the epilogue checks the row alone; a direct tile keeps its direct store for workgroups
    inside M."""
    source = sm.source(sm.TILES["64x64"], trans_a, True, 4, 4, dims=(None, 192, 96))
    _wgsl.parse(source)
    assert "if (row >=" not in source and not re.search(r"params\.[nk]\b", source)
    assert "params.m" in source and "192u" in source and "M ragged" in source
    clamp = "min(col, params.m - 4u)" if trans_a else "min(row, params.m - 1u)"
    assert source.count(clamp) == 1
    assert source.count("if (row < params.m) { store_c(") == 1 and "col <" not in source
    direct = sm.source(DIRECT, trans_a, False, 4, 4, dims=(None, 64, 48))
    _wgsl.parse(direct)
    assert ("params.has_bias == 0u && tile_m0 + 32u <= params.m) {\n"
            "    subgroupMatrixStore(&c, params.c_base + z * params.m * 64u") in direct
    for kernel in (sm.source(DIRECT, trans_a, False, 4, 4, dims=(None, 64, 48), split=True),
                   sm.source(sm.TILES["64x64"], False, True, 4, 4, dims=(None, 192, 96),
                             parts=3)):
        _wgsl.parse(kernel)
        assert "if (row >=" not in kernel and "subgroupMatrixStore(&c" not in kernel


def _skip_unless_available(device: gpucore.Device) -> None:
    if not sm.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")


# (tile, m, k, n, batch, trans_a, trans_b): M = a few tiles + an odd remainder; a batch of
# two where each entry's rows past M would fall into the next's; the load widths 4 and 1;
# K 1024 of one product splits K (split_k) into 4 slices.
CASES = [(sm.TILES["64x64"], 141, 96, 128, 2, False, True),
         (sm.ACC16_TILES["64x64"], 148, 64, 64, 1, True, False),
         (DIRECT, 77, 48, 64, 2, False, False),
         (sm.TILES["64x64"], 77, 1024, 64, 1, False, True)]


@pytest.mark.parametrize(("tile", "m", "k", "n", "batch", "trans_a", "trans_b"), CASES,
                         ids=lambda v: v.name if isinstance(v, sm.MatrixTile) else None)
def test_ragged_m_matches_float64_and_the_checked_kernel(
        device: gpucore.Device, monkeypatch: pytest.MonkeyPatch, tile: sm.MatrixTile, m: int,
        k: int, n: int, batch: int, trans_a: bool, trans_b: bool) -> None:
    """alpha, beta and a bias (the staged epilogue) and the identity epilogue (a direct
    tile's direct store): within f16 rounding of float64, bitwise equal to the checked
    kernel, and nothing written past C."""
    _skip_unless_available(device)
    if not tile.direct:  # 32 x 32 on emulated units: 8 -> 3 s of CI's CPU a case
        tile = emulated_tile(device, tile)
    assert sm.kernel_dims(tile, m, n, k) == (None, n, k)
    rng = np.random.default_rng(m + n + k)
    a = rng.standard_normal((batch, k, m) if trans_a else (batch, m, k)).astype(np.float16)
    b = (rng.standard_normal((n, k) if trans_b else (k, n)) / 4).astype(np.float16)
    bias = rng.standard_normal(n).astype(np.float16)
    c0 = rng.standard_normal(batch * m * n + 64).astype(np.float16)  # 64 more: a guard
    ta, tb, tbias = (Tensor.from_numpy(x, device=device) for x in (a, b, bias))
    plan = gemm_plan.batch_plan((batch,), (batch,), (), m * k, k * n)
    a64 = a.astype(np.float64).swapaxes(1, 2) if trans_a else a.astype(np.float64)
    b64 = b.astype(np.float64).T if trans_b else b.astype(np.float64)
    before = c0[:-64].reshape(batch, m, n).astype(np.float64)
    monkeypatch.setattr(sm, "RAGGED_KERNEL_ROWS", 0)  # lavapipe-sized M
    results = {}
    for ragged in (True, False):
        monkeypatch.setattr(sm, "RAGGED_KERNEL", ragged)
        for alpha, beta, has_bias in ((1.0, 0.0, False), (0.5, -1.5, True)):
            c = Tensor.from_numpy(c0, device=device)
            sm.record_gemm_matrix(ta.buffer, tb.buffer, c.buffer, tbias.buffer,
                                  has_bias=has_bias, m=m, n=n, k=k, trans_a=trans_a,
                                  trans_b=trans_b, alpha=alpha, beta=beta, plan=plan, tile=tile)
            got = c.numpy()
            assert np.array_equal(got[-64:].view(np.uint16), c0[-64:].view(np.uint16))
            want = alpha * a64 @ b64 + beta * before + (bias if has_bias else 0.0)
            error = np.abs(got[:-64].reshape(batch, m, n) - want).max() / np.abs(want).max()
            assert error < (1e-2 if tile.acc == "f16" else 2e-3), (ragged, alpha)
            results[ragged, alpha] = got.view(np.uint16)
    for alpha in (1.0, 0.5):
        assert np.array_equal(results[True, alpha], results[False, alpha]), alpha


def test_ragged_m_through_matmul(device: gpucore.Device,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """linalg.matmul of a batch whose rows do not fill the rule's tile takes the ragged-M
    kernel (n, k constants) and matches float64 with a bias."""
    _skip_unless_available(device)
    monkeypatch.setattr(sm, "RAGGED_KERNEL_ROWS", 0)  # lavapipe-sized M
    emulated_tiles(monkeypatch, device, (sm, "record_gemm_matrix"))  # the rule's, 32 x 32 there
    seen: list[object] = []
    kernel = sm._kernel
    monkeypatch.setattr(sm, "_kernel", lambda *args, **kw: seen.append(args[5]) or
                        kernel(*args, **kw))
    rng = np.random.default_rng(5)
    a = rng.standard_normal((2, 77, 64)).astype(np.float16)
    b = rng.standard_normal((128, 64)).astype(np.float16)
    bias = rng.standard_normal(128).astype(np.float16)
    got = linalg.matmul(*(Tensor.from_numpy(x, device=device) for x in (a, b)), trans_b=True,
                        bias=Tensor.from_numpy(bias, device=device)).numpy()
    want = a.astype(np.float64) @ b.astype(np.float64).T + bias
    assert seen == [(None, 128, 64)]
    assert np.abs(got - want).max() / np.abs(want).max() < 2e-3


def test_few_rows_keep_the_checked_kernel(device: gpucore.Device,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Below RAGGED_KERNEL_ROWS a ragged product takes the checked kernel (one build for
    every (n, k) of a tile: a cold start's text encoders), from it on the ragged one."""
    _skip_unless_available(device)
    seen: list[object] = []
    kernel = sm._kernel
    monkeypatch.setattr(sm, "_kernel", lambda *args, **kw: seen.append(args[5]) or
                        kernel(*args, **kw))
    rng = np.random.default_rng(6)
    a, b = (Tensor.from_numpy(rng.standard_normal(shape).astype(np.float16), device=device)
            for shape in ((77, 64), (128, 64)))
    linalg.matmul(a, b, trans_b=True)
    monkeypatch.setattr(sm, "RAGGED_KERNEL_ROWS", 77)
    linalg.matmul(a, b, trans_b=True)
    assert seen == [None, (None, 128, 64)]
