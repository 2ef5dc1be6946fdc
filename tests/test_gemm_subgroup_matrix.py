"""The f16 GEMM on the matrix units (gpustd/_gemm_subgroup_matrix.py). Its kernels compile
only on Dawn adapters with subgroup matrices (the GPU machine, GPUCORE_RUNTIME=dawn); here the
generator is checked against gpucore's WGSL reader, and the results against float64 wherever
the kernel is available."""

from __future__ import annotations

import re

import numpy as np
import pytest

import gpucore
from gpucore import _wgsl
from gpustd import Tensor, linalg
from gpustd import _gemm_subgroup_matrix as sm


@pytest.mark.parametrize("tile", [*sm.TILES.values(), sm.SMTile(2, 2, 2, 2, 16, True)])
@pytest.mark.parametrize(("trans_a", "trans_b", "vec"), [(False, False, True),
                                                          (True, True, False),
                                                          (False, True, True)])
def test_generated_kernel_interface(tile: sm.SMTile, trans_a: bool, trans_b: bool,
                                    vec: bool) -> None:
    source = sm.source(tile, trans_a, trans_b, vec, vec)
    signature = _wgsl.parse(source)
    assert [b.name for b in signature.storage] == ["a", "b", "bias", "c"]
    assert all(b.scalar == "f16" for b in signature.storage)
    assert signature.entry_points["main"].workgroup_size == (str(tile.threads),)
    # named accumulators, never an array of matrices (that would live in local memory)
    assert "array<subgroup_matrix" not in source
    assert len(re.findall(r"var c_\d+_\d+: subgroup_matrix_result<f32", source)) == \
        tile.fm * tile.fn
    assert source.count("subgroupMatrixMultiplyAccumulate") == tile.fm * tile.fn * tile.bk // 16


def test_tile_choice() -> None:
    assert sm.choose_tile(4096, 4096, 1) == sm.TILES["128x128"]
    assert sm.choose_tile(4096, 640, 1) == sm.TILES["64x64"]
    assert sm.choose_tile(77, 320, 2) == sm.TILES["64x64"]


@pytest.mark.parametrize(("m", "k", "n", "trans_a", "trans_b"),
                         [(77, 40, 33, False, False), (129, 333, 65, True, False),
                          (300, 200, 130, False, True), (64, 64, 64, True, True)])
def test_matches_float64_where_available(device: gpucore.Device, m: int, k: int, n: int,
                                         trans_a: bool, trans_b: bool) -> None:
    if not sm.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")
    rng = np.random.default_rng(m * n + k)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float16)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float16)
    bias = rng.standard_normal(n).astype(np.float16)
    got = linalg.matmul(Tensor.from_numpy(a, device=device), Tensor.from_numpy(b, device=device),
                        trans_a=trans_a, trans_b=trans_b,
                        bias=Tensor.from_numpy(bias, device=device)).numpy()
    a64 = a.astype(np.float64).T if trans_a else a.astype(np.float64)
    b64 = b.astype(np.float64).T if trans_b else b.astype(np.float64)
    expected = a64 @ b64 + bias
    # f32 accumulation; the f16 result's rounding (2^-11 relative) is what remains
    assert np.abs(got - expected).max() / np.abs(expected).max() < 2e-3
    c0 = rng.standard_normal((m, n)).astype(np.float16)
    c = Tensor.from_numpy(c0, device=device)
    linalg.gemm(0.5, Tensor.from_numpy(a, device=device), Tensor.from_numpy(b, device=device),
                -1.5, c, trans_a=trans_a, trans_b=trans_b)
    expected = 0.5 * a64 @ b64 - 1.5 * c0
    assert np.abs(c.numpy() - expected).max() / np.abs(expected).max() < 2e-3
