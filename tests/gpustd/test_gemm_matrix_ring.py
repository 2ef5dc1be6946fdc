"""The subgroup-matrix GEMM's two-stage ring and grouped launch order (gpustd/gemm/matrix_tile.py's
`double` without prefetch, `c_in_staging`, `group`): the generated kernels' shape here, and
their results against float64 and, bit for bit, against the plain tile's, where the matrix
units run (emulated on CI's lavapipe: conftest.matrix_device)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import emulated_subset, matrix_device

import gpucore
from gpucore import _wgsl
from gpustd import Tensor
from gpustd.gemm import matrix_units as sm
from gpustd.gemm import plan as gemm_plan


@pytest.fixture
def device(device: gpucore.Device) -> gpucore.Device:
    return matrix_device(device)


@pytest.mark.nodevice
def test_ring_kernel_shape() -> None:
    """Without prefetch a double-buffered tile fetches and stages the next K step into the
    other buffer before this step's multiplies, one barrier a step; with f16 accumulators its
    epilogue goes through sh_a, so 256 x 256 in K steps of 16 fits 48 KiB."""
    ring = sm.MatrixTile(4, 4, 4, 4, bk=16, double=True, prefetch=False, acc="f16")
    assert ring.c_in_staging and ring.shared_bytes() == 48 * 1024
    assert ring.name == "256x256/4x4sg/4x4fr/k16/db/acc16/np"
    source = sm.source(ring, False, True, 8, 8, dims=(4096, 4096, 4096))
    _wgsl.parse(source)
    assert "sh_c" not in source and "subgroupMatrixStore(&sh_a, sg * 256u" in source
    loop = source[source.index("for (var t"):source.index("subgroupMatrixStore")]
    assert loop.count("workgroupBarrier") == 1
    assert loop.index("stage(") < loop.index("subgroupMatrixMultiplyAccumulate")
    # f32 accumulators keep an epilogue buffer of their own, as single-stage tiles do
    for tile in (sm.MatrixTile(4, 2, 4, 4, bk=16, double=True, prefetch=False),
                 sm.ACC16_TILES["256x256"]):
        assert not tile.c_in_staging
        assert "var<workgroup> sh_c" in sm.source(tile, False, True, 4, 4)


def _band_order(group: int, tiles_x: int, tiles_y: int) -> list[tuple[int, int]]:
    """(row, column) of each workgroup in launch order, by the WGSL of a grouped tile,
    evaluated with u32 arithmetic."""
    tile = sm.MatrixTile(2, 2, 2, 2, group=group)
    text = sm.source(tile, False, True, 4, 4)
    body = text[text.index("let tiles_x"):text.index("n0 = tile_x")]
    order = []
    for flat in range(tiles_x * tiles_y):
        env = {"tiles_x": tiles_x, "tiles_y": tiles_y}
        wid_y, wid_x = divmod(flat, tiles_x)
        for line in body.strip().splitlines():
            target, expr = re.match(r"\s*(?:let )?(\w+) = (.*);", line).groups()
            if target in ("tiles_x", "tiles_y"):  # ceil(N / BN), ceil(M / BM): given
                continue
            expr = re.sub(r"(\d+)u\b", r"\1", expr).replace("/", "//")
            expr = expr.replace("wid.y", str(wid_y)).replace("wid.x", str(wid_x))
            env[target] = eval(expr, {"min": min}, env)  # the generated u32 arithmetic
        order.append((env["m0"] // tile.bm, env["tile_x"]))
    return order


@pytest.mark.nodevice
@pytest.mark.parametrize(("group", "tiles_x", "tiles_y"), [(8, 48, 18), (3, 5, 7), (4, 1, 2)])
def test_grouped_order_covers_every_tile_once(group: int, tiles_x: int, tiles_y: int) -> None:
    order = _band_order(group, tiles_x, tiles_y)
    assert sorted(order) == [(r, c) for r in range(tiles_y) for c in range(tiles_x)]
    # consecutive workgroups walk a band's rows first: column 0 of rows 0..group-1
    rows = min(group, tiles_y)
    assert order[:rows] == [(r, 0) for r in range(rows)]


@pytest.mark.parametrize(("tile", "trans_b"), [
    (sm.MatrixTile(2, 2, 2, 2, bk=16, double=True, prefetch=False), True),
    (sm.MatrixTile(2, 2, 2, 2, bk=16, double=True, prefetch=False, acc="f16", group=3), False),
    (sm.MatrixTile(2, 2, 2, 2, double=True, prefetch=False, acc="f16", group=3), True)],
    ids=lambda t: getattr(t, "name", str(t)))
def test_ring_and_grouped_tiles_match_float64_where_available(
        device: gpucore.Device, tile: sm.MatrixTile, trans_b: bool) -> None:
    """A batch of two products ragged in every dimension (4 x 3 tiles of 64: a last band of
    one row), against float64 and bit for bit the same tile without ring or grouping."""
    # emulated units: none (each kernel a compile of seconds); the GEGLU case below runs
    # the f16 ring in bands there
    emulated_subset(device, False)
    if not sm.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices")
    m, k, n = 200, 328, 184
    rng = np.random.default_rng(44)
    a = rng.standard_normal((2, m, k)).astype(np.float16)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float16)
    ta, tb = Tensor.from_numpy(a, device=device), Tensor.from_numpy(b, device=device)
    plan = gemm_plan.batch_plan((2,), (2,), (), m * k, k * n)
    got = []
    for t in (tile, sm.MatrixTile(2, 2, 2, 2, bk=tile.bk, acc=tile.acc)):
        c = Tensor.empty((2, m, n), np.float16, device=device)
        sm.record_gemm_matrix(ta.buffer, tb.buffer, c.buffer, tb.buffer, has_bias=False, m=m,
                              n=n, k=k, trans_a=False, trans_b=trans_b, alpha=1.0, beta=0.0,
                              plan=plan, tile=t)
        got.append(c.numpy())
    expected = a.astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    bound = 2e-3 if tile.acc == "f32" else 1e-2  # f16 accumulators: about 10x the error
    assert np.abs(got[0] - expected).max() / np.abs(expected).max() < bound
    assert np.array_equal(got[0], got[1])


def test_grouped_geglu_pairs_match_float64_where_available(device: gpucore.Device) -> None:
    """GEGLU's one GEMM (the pairs epilogue names the tile's column and reads its partner's
    accumulators from the staging buffer) in bands of 2 tile rows over 3 rows of tiles, on
    the f16 ring: every option above in one kernel, the one emulated units compile."""
    from gpustd.gemm import matrix_geglu

    if not sm.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices")
    tile = sm.MatrixTile(2, 2, 2, 2, bk=16, double=True, prefetch=False, acc="f16", group=2)
    assert tile.c_in_staging
    m, d, k = 192, 64, 96
    assert matrix_geglu.fits(tile, m, d, k)
    rng = np.random.default_rng(45)
    x = rng.standard_normal((m, k)).astype(np.float16)
    w = (rng.standard_normal((2 * d, k)) / 4).astype(np.float16)
    tx, tw = Tensor.from_numpy(x, device=device), Tensor.from_numpy(w, device=device)
    out = Tensor.empty((m, d), np.float16, device=device)
    matrix_geglu.record_gemm_geglu(tx.buffer, tw.buffer, tw.buffer, out.buffer, has_bias=False,
                                   m=m, d=d, k=k, tile=tile, approximate=2)
    h = x.astype(np.float64) @ w.astype(np.float64).T
    value, gate = h[:, :d], h[:, d:]
    want = value * 0.5 * gate * (1 + np.tanh(np.sqrt(2 / np.pi) * (gate + 0.044715 * gate**3)))
    assert np.abs(out.numpy() - want).max() / np.abs(want).max() < 1e-2


@pytest.mark.nodevice
def test_direct_store_kernel_shape() -> None:
    """A `direct` tile's kernel stores its f16 accumulators straight into C where the
    epilogue is the identity (a uniform branch on alpha, beta and the bias), the staged
    epilogue in the other branch; only a kernel whose tile fills C does; f32 accumulators
    only into a split kernel's f32 slab."""
    tile = sm.MatrixTile(4, 4, 4, 4, acc="f16", group=8, direct=True)
    assert tile.name == "256x256/4x4sg/4x4fr/k32/acc16/g8/ds"
    source = sm.source(tile, False, True, 4, 4, dims=(512, 768, 1024))
    _wgsl.parse(source)
    direct = re.findall(r"subgroupMatrixStore\(&c, params\.c_base \+ z \* 512u \* 768u \+ "
                        r"\(tile_m0 \+ r_in \+ (\d+)u\) \* 768u \+ tile_n0 \+ c_in \+ "
                        r"(\d+)u, c_(\d)_(\d), false, 768u\)", source)
    assert sorted(direct) == sorted((str(16 * i), str(16 * j), str(i), str(j))
                                    for i in range(4) for j in range(4))
    # its offsets from lets (uniform to Tint), not the private m0, n0, off_c
    assert "let tile_m0 = (flat / (8u * tiles_x) * 8u" in source and "m0 = tile_m0;" in source
    epilogue = source[source.index("params.alpha == 1.0 && params.beta == 0.0"):]
    assert epilogue.index("} else {") < epilogue.index("put_fragment(")
    for kernel in (sm.source(tile, False, True, 4, 4),  # ragged: bound checks, staged
                   sm.source(sm.ACC16_TILES["256x256g8"], False, True, 4, 4, dims=(512, 768, 1024)),
                   sm.source(tile, False, True, 4, 4, dims=(512, 768, 1024), split=True)):
        assert "subgroupMatrixStore(&c" not in kernel
    # f32 accumulators go straight to a split kernel's f32 slab (record_gemm_f32_out), never
    # into an f16 C
    f32 = sm.MatrixTile(4, 2, 2, 4, direct=True)
    split = sm.source(f32, False, True, 4, 4, dims=(512, 768, 1024), split=True)
    _wgsl.parse(split)
    assert len(re.findall(r"subgroupMatrixStore\(&c, wid\.z \* 512u \* 768u \+ \(tile_m0",
                          split)) == f32.fm * f32.fn
    assert "subgroupMatrixStore(&c" not in sm.source(f32, False, True, 4, 4,
                                                      dims=(512, 768, 1024))
    with pytest.raises(ValueError, match="only with f16 operands"):
        sm.MatrixTile(2, 2, 2, 2, bk=64, component="i8", acc="i32", direct=True)


def test_direct_store_matches_float64_where_available(device: gpucore.Device) -> None:
    """A batch of two products that fill a direct tile: with the identity epilogue (stored
    straight from the accumulators) and with a scale and a bias (the staged branch of the same
    kernel), against float64."""
    if not sm.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices")
    tile = sm.MatrixTile(2, 1, 1, 2, bk=16, acc="f16", direct=True)  # few fragments: fast
    m, k, n = 96, 48, 192
    rng = np.random.default_rng(46)
    a = rng.standard_normal((2, m, k)).astype(np.float16)
    b = rng.standard_normal((n, k)).astype(np.float16)
    bias = rng.standard_normal(n).astype(np.float16)
    ta, tb, tbias = (Tensor.from_numpy(x, device=device) for x in (a, b, bias))
    plan = gemm_plan.batch_plan((2,), (2,), (), m * k, k * n)
    expected = a.astype(np.float64) @ b.T.astype(np.float64)
    for alpha, has_bias in ((1.0, False), (0.5, True)):
        c = Tensor.empty((2, m, n), np.float16, device=device)
        sm.record_gemm_matrix(ta.buffer, tb.buffer, c.buffer, tbias.buffer, has_bias=has_bias,
                              m=m, n=n, k=k, trans_a=False, trans_b=True, alpha=alpha,
                              beta=0.0, plan=plan, tile=tile)
        want = alpha * expected + (bias.astype(np.float64) if has_bias else 0.0)
        assert np.abs(c.numpy() - want).max() / np.abs(want).max() < 1e-2
