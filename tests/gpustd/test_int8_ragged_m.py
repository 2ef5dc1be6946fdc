"""The W8A8 GEMM's kernel for a ragged M (gpustd/gemm/int8_units.py, dims (None, n, kw)): N and
K fill the tile, M does not. Its choice (the f16 GEMM's rule), its WGSL (n, kw constants, A's
row clamped, no bound check but C's rows) and its results: the exact i32 sums' epilogue in
float64 to within one f16 step, and bit for bit the checked kernel's, on emulated matrix
units where there are none (conftest.matrix_device)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import matrix_device

import gpucore
from gpucore import _wgsl
from gpustd import Tensor
from gpustd.gemm import int8_units
from gpustd.gemm import matrix_units as sm
from gpustd.gemm.matrix_codegen import MatrixTile

# The smallest i8 tile (32 x 32, K steps of 8 words): a few seconds per emulated compile.
SMALL = MatrixTile(1, 1, 2, 2, bk=32, prefetch=False, component="i8", acc="i32")


@pytest.mark.nodevice
def test_kernel_dims() -> None:
    """Z-Image's 4256 rows on the rule's 256 x 128 tile: ragged; below RAGGED_KERNEL_ROWS,
    or with N or K (in words) not filling the tile, checked; a tile multiple, aligned."""
    tile = int8_units.TILES["256x128"]
    assert int8_units.kernel_dims(tile, 4256, 3840, 960) == (None, 3840, 960)
    assert int8_units.kernel_dims(tile, 4096, 3840, 960) == (4096, 3840, 960)
    assert int8_units.kernel_dims(tile, 300, 3840, 960) is None
    assert int8_units.kernel_dims(tile, 4256, 3900, 960) is None
    assert int8_units.kernel_dims(tile, 4256, 3840, 968) is None


@pytest.mark.nodevice
def test_ragged_m_kernel_checks_rows_only() -> None:
    source = int8_units.source(int8_units.TILES["128x128k128"], 4, 4, dims=(None, 384, 96))
    _wgsl.parse(source)
    assert "if (row >=" not in source and not re.search(r"params\.(n|kw)\b", source)
    assert "384u" in source and "96u" in source and "M ragged" in source
    assert source.count("min(row, params.m - 1u)") == 1
    assert source.count("if (row < params.m) { store_c(") == 1 and "col <" not in source


def test_ragged_m_matches_float64_and_the_checked_kernel(
        device: gpucore.Device, monkeypatch: pytest.MonkeyPatch) -> None:
    """M 45 (not a multiple of 16 or of the tile's 32) x N 64 x K 96 bytes, with a bias and
    beta: within one f16 step of the exact sums' epilogue in float64, bitwise the checked
    kernel's, and nothing written past C."""
    device = matrix_device(device)
    if not int8_units.available(device):
        pytest.skip(f"{device.info.label} has no i8 subgroup matrices, emulated or real")
    m, n, kw = 45, 64, 24
    rng = np.random.default_rng(8)
    a = rng.integers(-127, 128, (m, 4 * kw), dtype=np.int8)
    b = rng.integers(-127, 128, (n, 4 * kw), dtype=np.int8)
    scale_a = rng.uniform(1e-4, 1e-3, m).astype(np.float32)
    scale_b = rng.uniform(1e-3, 1e-2, n).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float16)
    c0 = rng.standard_normal(m * n + 64).astype(np.float16)  # 64 more: a guard
    buffers = [Tensor.from_numpy(x, device=device).buffer for x in
               (a.view(np.int32), b.view(np.int32), scale_a, scale_b, bias)]
    beta = -1.5
    sums = a.astype(np.float64) @ b.astype(np.float64).T
    want = (sums * scale_a[:, None] * scale_b[None, :]
            + beta * c0[:-64].reshape(m, n).astype(np.float64) + bias.astype(np.float64))
    monkeypatch.setattr(sm, "RAGGED_KERNEL_ROWS", 0)  # lavapipe-sized M
    assert int8_units.kernel_dims(SMALL, m, n, kw) == (None, n, kw)
    results = {}
    for ragged in (True, False):
        monkeypatch.setattr(sm, "RAGGED_KERNEL", ragged)
        c = Tensor.from_numpy(c0, device=device)
        int8_units.record_w8a8_matrix(*buffers, c.buffer, m=m, n=n, kw=kw, has_bias=True,
                                      beta=beta, tile=SMALL)
        got = c.numpy()
        assert np.array_equal(got[-64:].view(np.uint16), c0[-64:].view(np.uint16))
        off = np.abs(got[:-64].reshape(m, n).astype(np.float64) - want)
        step = np.spacing(np.abs(want).astype(np.float16)).astype(np.float64)
        assert (off <= step).all(), (ragged, int((off > step).sum()))
        results[ragged] = got.view(np.uint16)
    assert np.array_equal(results[True], results[False])
