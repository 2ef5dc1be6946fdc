"""f16 GEMM on the matrix units (tensor cores): WGSL `chromium_experimental_subgroup_matrix`
(Dawn), f16 operands, f32 accumulation. gpustd/gemm/dispatch.py routes f16 GEMMs here when the
device has a matching subgroup-matrix config (f16 x f16 -> f32, 16x16x16, subgroups of 32).

The kernels come from gpustd/gemm/matrix_codegen.py's generator; this module supplies the
GEMM's bindings, batch offsets, row-major loads and its epilogue (alpha * acc + beta * C +
bias, rounded to f16), the rule's tile (choose_tile; gpustd/gemm/matrix_tuning.py may pick
another) and records the dispatches in the tile it is given.

Accumulation is f32 unless gpustd/gemm/accumulate.py's accumulation() says f16 (an
`accumulating("f16")` block, or GPUSTD_GEMM_ACCUMULATE=f16): half the accumulators'
registers, which lets a subgroup hold 4 x 4 fragments in 256 x 256 tiles of 16 subgroups
(ACC16_TILES), 1.4-1.6x faster on deep products, at an error of 2e-3 to 1e-2 of the result's
largest magnitude against float64 where f32 gives 2e-4 to 5e-4 (K 640 to 12288, normal
operands; bench/NOTES.md, "f16 accumulators").
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from typing import Any

import numpy as np

from gpucore import Buffer, Device, Kernel

from . import portable
from .accumulate import ACCUMULATE_ENV, accumulation
from .matrix_codegen import MatrixTile, load_width
from .matrix_gemm_source import source
from .matrix_tile import on_device
from .plan import MULTIPROCESSORS, WAVE, BatchPlan

__all__ = ["ACC16_TILES", "ACCUMULATE_ENV", "TILES", "MatrixTile", "accumulation", "available",
           "choose_tile", "kernel_dims", "record_gemm_f32_out", "record_gemm_matrix",
           "record_gemm_parts", "source",
           "split_k"]

# The shipped configurations: choose_tile picks 64x64, 64x128, 128x128 or 128x128k16;
# 64x64k16 (the rule for many tiles with robustness on) stays a candidate for the autotuner.
# 64x64 without prefetch: faster than with it on every shape tools/sm_sweep.py times (H100,
# aligned: 82.4/75.5 vs 75.1/73.0 at 4096^3 nn/nt, 58.0 vs 46.7 at 4096x640x640).
TILES = {"64x64": MatrixTile(2, 2, 2, 2, prefetch=False), "64x64k16": MatrixTile(2, 2, 2, 2, bk=16),
         "64x128": MatrixTile(2, 4, 2, 2, prefetch=False), "128x128": MatrixTile(4, 2, 2, 4),
         "128x128k16": MatrixTile(4, 2, 2, 4, bk=16),
         "128x256": MatrixTile(4, 4, 2, 4, prefetch=False),
         "128x160": MatrixTile(2, 5, 4, 2), "64x160": MatrixTile(2, 5, 2, 2, prefetch=False),
         "256x128": MatrixTile(4, 2, 4, 4)}  # 16 subgroups: 512 invocations
# With f16 accumulators (accumulation() "f16"): every tile above with them, and 256 x 256 tiles
# of 16 subgroups of 4 x 4 fragments (K steps of 32: 48 KiB of workgroup memory), which f32
# accumulators cannot hold (128 registers an invocation at 512 invocations); the same without
# prefetch, storing C from the accumulators (`direct`) the rule's where B is K x N; in bands
# of 8 tile rows, the rule's where B is N x K; and for the tuner, 8 subgroups of 8 x 4.
ACC16_TILES = {**{name: replace(tile, acc="f16") for name, tile in TILES.items()},
               "256x256": MatrixTile(4, 4, 4, 4, acc="f16"),
               "256x256g8": MatrixTile(4, 4, 4, 4, acc="f16", group=8),
               "256x256np": MatrixTile(4, 4, 4, 4, acc="f16", prefetch=False),
               "256x256npds": MatrixTile(4, 4, 4, 4, acc="f16", prefetch=False, direct=True),
               "256x256s8": MatrixTile(8, 4, 2, 4, acc="f16", prefetch=False)}
# 256 x 256 f16-accumulating tiles from this K on where they make a wave or more (choose_tile)
ACC16_DEEP_K = 1024


# Split K (split_k) for single products whose tiles make under one wave.
SPLIT_K = True
_SPLIT_GRANULE = 32  # splits start on multiples of this many K (every tile's BK divides it)
_MIN_SPLIT_K = 256  # the shallowest split
# the shortest K split: 154 x 2048 x 1280 ran 34.6 us split against 44.8 unsplit, 2 x 1280 x
# 1280 24.5 against 30.2, but 154 x 768 x 1280 28.0 against 25.7 (H100, Dawn, gemm-split-*)
_SPLIT_FROM_K = 1024
_MAX_SPLITS = 8
# With f16 accumulators, products this deep whose 256 x 256 tiles leave the last wave part
# empty split K where that fills it (_deep_splits): FLUX's feed-forward net.2, 4096 x 12288 x
# 3072 (192 tiles, 1.45 waves), 1.298 -> 1.097 ms in 2 splits, its single blocks' proj_out
# 4608 x 15360 x 3072 (216 tiles) 1.642 -> 1.536 in 3, and each split's sums start from zero:
# their error against float64 7.8e-3 -> 4.3e-3, 9.6e-3 -> 3.5e-3. Shallower products and f32
# accumulators lose (the f32 slabs' traffic outweighs the wave; H100, Dawn, bench/NOTES.md,
# "Split K for the last wave").
ACC16_SPLIT_FROM_K = 12288
ACC16_SPLIT = True

# From this K on, 128 x 128 tiles keep K steps of 32 however many waves they make: FLUX's
# single-block output projection 4608 x 15360 x 3072 (nt) ran 2.755 ms with them against
# 3.416 with K steps of 16 (H100, Dawn, 2026-11-25, gemm-shapes-dawn-h100.json), while
# 2048 x 5120 x 1280 and 4608 x 3072 x 21504 stay faster with 16 (0.253 / 0.280, 3.310 / 4.060).
LONG_K = 12288
DEEP_K = 3072
# 256 x 128 tiles from these K and n on (choose_tile). SD 1.5's GEGLU 8192 x 320 x 2560 (nt)
# ran 0.101 ms with them against 0.121 (128 x 128, K 16); its products of n 320-1280 lose
# (8192 x 1280 x 320 0.076 / 0.050, 2048 x 2560 x 640 0.101 / 0.069; H100, Dawn, 2026-11-26,
# gemm-sd15-16sg-dawn-h100.json).
WIDE_K = 320
WIDE_N = 2048


# From this many rows on, M need not fill the rule's tile (its last row of workgroups runs
# part-filled, checked): Z-Image's 4256-row GEMMs took 64 x 64 before, 1.7-1.8x slower than
# 256 x 128 (H100, Dawn; bench/NOTES.md, "Z-Image's GEMMs").
RAGGED_M = 2048


def _fills(tile: MatrixTile, m: int, n: int, k: int) -> bool:
    """Whether the rule may take `tile`: aligned, or only M ragged and from RAGGED_M on."""
    return (m % tile.bm == 0 or m >= RAGGED_M) and n % tile.bn == 0 and k % tile.bk == 0


# Where only M is ragged (N and K fill the tile), a kernel of its own: n and k constants, C's
# rows alone checked (matrix_gemm_source.source's dims (None, n, k)), the same bits as the
# checked kernel; False: the checked kernel, for comparison (tools/ragged_gemm_ab.py).
RAGGED_KERNEL = True
# ... from this many rows on: below, the checked kernel, one build for all of a tile's ragged
# products, where the ragged one is built per (n, k) (text encoders' 77-row products and SD's
# cross-attention context stay a few builds on a cold start; SD 3.5's 666-row context
# products, 18-35% faster ragged, take it).
RAGGED_KERNEL_ROWS = 512


def aligned(tile: MatrixTile, m: int, n: int, k: int) -> bool:
    """Whether an m x k by k x n product fills `tile`'s workgroups and K steps exactly (then
    its kernel checks no bound: matrix_codegen's `aligned`)."""
    return m % tile.bm == 0 and n % tile.bn == 0 and k % tile.bk == 0


def kernel_dims(tile: MatrixTile, m: int, n: int, k: int,
                ragged: bool = True) -> tuple[int | None, int, int] | None:
    """source's `dims` for an m x k by k x n product on `tile`: (m, n, k) where it fills the
    tile, with `ragged` (None, n, k) where only M does not, else None (the checked kernel)."""
    if aligned(tile, m, n, k):
        return m, n, k
    if ragged and n % tile.bn == 0 and k % tile.bk == 0:
        return None, n, k
    return None


def _ragged(m: int) -> bool:
    """Whether a product of m rows may take the ragged-M kernel (RAGGED_KERNEL from
    RAGGED_KERNEL_ROWS rows on)."""
    return RAGGED_KERNEL and m >= RAGGED_KERNEL_ROWS


def available(device: Device) -> bool:
    """Whether `device` multiplies f16 16x16x16 fragments into f32 on subgroups of 32."""
    info = device.info
    config = getattr(info, "matrix_config", lambda *a: None)("f16", "f32", 16, 16, 16)
    return (config is not None and "subgroup" in device.features and device.has_f16
            and config.min_subgroup_size in (0, 32) and config.max_subgroup_size in (0, 32))


def choose_tile(m: int, n: int, batch: int, *, k: int = 0, storage: int = 48 * 1024,
                invocations: int = 1024, accumulate: str = "f32",
                trans_b: bool = True) -> MatrixTile:
    """The rule's tile (the tuner may pick another: gpustd/gemm/matrix_tuning.py). Without
    Dawn's robustness (gpucore's default): 128 x 128 tiles of 8 subgroups (2 x 4 fragments,
    prefetch) for products that fill them exactly (m, n multiples of 128, K of 32; from RAGGED_M
    rows on m need not) in 2 or more waves, with K steps of 16 from 4 waves on (below LONG_K); 64 x
    128 where that alone fills its tiles in 8 waves; otherwise 64 x 64 with K steps of 32. Below 2
    waves of 128 x 128, 64 x 64 wins or ties on every SD 1.5 and SDXL UNet GEMM. The measurements
    behind the rule, and the tilings that lost, are in bench/NOTES.md ("choose_tile's
    measurements").

    Before those, 128 x 256 tiles (4 x 4 fragments a subgroup) for products that fill them
    with K from DEEP_K in 3 or more waves. H100, Dawn, 2026-11-25 (m x k x n nt, ms against
    the 128 x 128 rule's, gemm-noprefetch-dawn-h100.json): 4096^3 0.716 / 0.817, FLUX's
    4608 x 3072 x 12288 1.847 / 1.993 and 4608 x 12288 x 3072 2.028 / 2.191, 4608 x 3072 x
    3072 0.553 / 0.544; below DEEP_K they lose (8192 x 2560 x 640 0.313 / 0.224).
    storage, invocations: the device's workgroup memory in bytes and its invocations a
    workgroup; tiles that need more are passed over.

    Before all of these, 256 x 128 tiles of 16 subgroups (2 x 4 fragments each, as 128 x 128's)
    where they fill their tiles, K is from WIDE_K and n from WIDE_N, in 4 or more waves of
    128 x 128: every workgroup-memory fragment serves twice the products. H200, Dawn,
    2026-11-25 (m x k x n nt, ms against the rule's tile before; gemm-16sg-dawn-h200.json):
    4096^3 0.692 / 0.733 (128 x 256), 8192 x 640 x 5120 0.298 / 0.345-0.417, 2048 x 1280 x
    10240 0.298 / 0.323-0.363; where 128 x 160 is the rule's they lose (8192 x 2560 x 640
    0.234 / 0.188).

    Under 4 waves of 128 x 128, where n is a multiple of 160 and 128 x 160 tiles (8
    subgroups of 2 x 5 fragments) make about a wave or more: those (64 x 160 where they make
    under 1.5 waves with K from 4096). The UNets' channel counts (320, 640, 1280) divide by
    160 and not all by 128 or 256, so the wider tile fills the SMs more evenly. H100, Dawn,
    2026-11-25 (m x k x n nt, ms, the rule's tile before / now; gemm-tiles160-dawn-h100.json,
    gemm-tiles160-sweep-dawn-h100.json): SDXL 2048 x 5120 x 1280 0.246 / 0.171, 2048 x 1280 x
    1280 0.063 / 0.050, 8192 x 2560 x 640 0.226 / 0.180, 8192 x 640 x 640 0.068 / 0.056;
    SD 1.5 8192 x 1280 x 320 0.071 / 0.050. Where the rule takes K steps of 16 (4 waves and
    more), or 160-wide tiles would be fewer than a wave, they lose (2048 x 1280 x 10240
    0.341 / 0.362, 2048 x 640 x 640 0.027 / 0.029) and are not taken.

    accumulate "f16": 256 x 256 tiles (ACC16_TILES; without prefetch and with C stored
    straight from the accumulators where B is stored K x N, not `trans_b`: "256x256npds";
    else launched in bands of 8 tile rows: "256x256g8") where they fill their
    tiles in a wave or more with K from ACC16_DEEP_K, else the f32 rule's tile with f16
    accumulators. H200, Dawn, 2026-11-26 (m x k x n, ms: 256 x 256 f16 / the f32 rule's
    tile, nt then nn; gemm-acc16-dawn-h200.json): 4096^3 0.500
    / 0.697 and 0.446 / 0.723, FLUX's 4608 x 3072 x 3072 0.372 / 0.527 and 0.344 / 0.526, 4608
    x 3072 x 12288 1.232 / 1.837 and 1.167 / 1.853, 4608 x 12288 x 3072 1.336 / 2.017 and
    1.220 / 2.045, SDXL's 4096 x 1280 x 5120 0.258 / 0.291 and 0.243 / 0.294. Prefetch wins
    nt (4096^3 0.500 against 0.513 without), loses nn (0.523 against 0.446). At K 640,
    256 x 128 with f16 accumulators is as fast (4096 x 640 x 5120 nt 0.151 against 0.160).
    Bands of 8 rows (nt, H200, 2026-11-26, gemm44-sweep-*-dawn-h200.json, gemm44-group-*):
    4096^3 0.481 / 0.501 and 0.484 / 0.503, FLUX's three 0.366 / 0.375, 1.196 / 1.231, 1.307 /
    1.334, SDXL's 0.252 / 0.258; nn gains nothing, f32's 256 x 128 loses (bench/NOTES.md).
    Direct stores (H100, gemm45-direct-*-dawn-h100.json): nn 4096^3 0.434 / 0.445; nt lose.
    From RAGGED_M rows on, M need not fill the 256 x 256 tiles either (the ragged-M kernel):
    H100, nt, ms against 256 x 128 with f16 accumulators (ragged-kernels-dawn-h100.json),
    Z-Image's 4256 x 3840 x 3840 0.437 / 0.612, 4256 x 3840 x 10240 1.095 / 1.540.
    """
    if accumulate == "f16":
        big = ACC16_TILES["256x256g8" if trans_b else "256x256npds"]
        if (k >= ACC16_DEEP_K and _fills(big, m, n, k) and big.shared_bytes() <= storage
                and big.threads <= invocations
                and (m // 256) * (n // 256) * batch >= MULTIPROCESSORS):
            return big
        return replace(choose_tile(m, n, batch, k=k, storage=storage, invocations=invocations),
                       acc="f16")
    huge, wide, square = TILES["128x256"], TILES["128x128k16"], TILES["128x128"]
    sixteen = TILES["256x128"]
    waves = (m // 128) * (n // 128) * batch / MULTIPROCESSORS
    if (k >= WIDE_K and n >= WIDE_N and waves >= 4 and _fills(sixteen, m, n, k)
            and sixteen.shared_bytes() <= storage and sixteen.threads <= invocations):
        return sixteen
    if (k >= DEEP_K and _fills(huge, m, n, k) and huge.shared_bytes() <= storage
            and (m // 128) * (n // 256) * batch >= 3 * MULTIPROCESSORS):
        return huge
    if (k and _fills(wide, m, n, k) and waves >= 4 and k < LONG_K
            and wide.shared_bytes() <= storage):
        return wide
    narrow = TILES["128x160"]
    narrow_tiles = (m // 128) * (n // 160) * batch
    if (k and _fills(narrow, m, n, k) and waves < 4 and narrow_tiles >= WAVE
            and narrow.shared_bytes() <= storage):
        return TILES["64x160"] if narrow_tiles < 1.5 * MULTIPROCESSORS and k >= 4096 else narrow
    if k and _fills(square, m, n, k) and waves >= 2 and square.shared_bytes() <= storage:
        return square
    big = TILES["64x128"]
    if k and _fills(big, m, n, k) and (m // 64) * (n // 128) * batch >= 8 * MULTIPROCESSORS:
        return big
    return TILES["64x64"]


def _kernel(tile: MatrixTile, trans_a: bool, trans_b: bool, width_a: int, width_b: int,
            dims: tuple[int | None, int, int] | None, split: bool = False,
            parts: int = 1) -> Kernel:
    return Kernel.generated("linalg/gemm_subgroup_matrix", source, tile, trans_a, trans_b,
                            width_a, width_b, dims, split, parts)


def split_k(m: int, n: int, k: int, batch: int, acc: str = "f32") -> int:
    """The K extent of each split of this product (k: unsplit), whichever tile of accumulator
    type `acc` runs it: one matrix whose rule tile makes under one wave, K from
    _SPLIT_FROM_K on, splits K into enough slices for ~2 waves, each at least _MIN_SPLIT_K
    deep and starting on a multiple of _SPLIT_GRANULE (so every tile, BK 16 or 32, cuts K at
    the same places and sums the same slices in the same order: the tuner's candidates keep
    the result's bits). SDXL's cross-attention keys and values, 154 x 2048 x 1280 (60 tiles
    of 64 x 64): 5 splits. With f16 accumulators, deep products also split to fill their last
    wave (_deep_splits)."""
    if not SPLIT_K or batch != 1 or k < _SPLIT_FROM_K:
        return k
    deep = _deep_splits(m, n, k) if acc == "f16" else 1
    if deep > 1:
        return math.ceil(math.ceil(k / _SPLIT_GRANULE) / deep) * _SPLIT_GRANULE
    tile = choose_tile(m, n, batch, k=k)
    tiles = math.ceil(m / tile.bm) * math.ceil(n / tile.bn)
    if tiles >= WAVE:
        return k
    granules = math.ceil(k / _SPLIT_GRANULE)
    wanted = min(_MAX_SPLITS, math.ceil(2 * MULTIPROCESSORS / tiles),
                 k // _MIN_SPLIT_K)
    if wanted < 2:
        return k
    return math.ceil(granules / wanted) * _SPLIT_GRANULE


def _deep_splits(m: int, n: int, k: int) -> int:
    """K splits (1: none) for one f16-accumulating product from ACC16_SPLIT_FROM_K deep that
    the f16 rule gives 256 x 256 tiles: the count of 1 to 4 whose workgroups fill their last
    wave best (the fewest where two tie), taken where it fills the waves a tenth better than
    unsplit. FLUX's 4096 x 12288 x 3072: 192 tiles, 1.45 waves (73% full) -> 2 splits, 2.91
    (97%); 4608 x 15360 x 3072: 216 tiles, 1.64 -> 3 splits, 4.91 (98%)."""
    if not ACC16_SPLIT or k < ACC16_SPLIT_FROM_K:
        return 1
    tile = choose_tile(m, n, 1, k=k, accumulate="f16")
    if (tile.bm, tile.bn) != (256, 256):
        return 1
    waves = math.ceil(m / tile.bm) * math.ceil(n / tile.bn) / MULTIPROCESSORS

    def filled(splits: int) -> float:
        return waves * splits / math.ceil(waves * splits)

    best = max(range(1, 5), key=lambda s: (round(filled(s), 2), -s))
    return best if filled(best) >= filled(1) + 0.1 else 1


def record_gemm_matrix(a: Buffer[Any], b: Buffer[Any], c: Buffer[Any], bias: Buffer[Any], *,
                       has_bias: bool, m: int, n: int, k: int, trans_a: bool, trans_b: bool,
                       alpha: float, beta: float, plan: BatchPlan, tile: MatrixTile,
                       bias_rows: bool = False) -> None:
    """Record C = alpha op(A) op(B) + beta C + bias (f16, f32 accumulation) for every batch
    entry of `plan` on the matrix units in `tile`; bias (n,) along rows, or with `bias_rows`
    (m,), one per row (a 1x1 conv's output channels). No validation: the caller
    (gpustd.gemm.dispatch.record_gemm) has done it; `bias` is a placeholder when not has_bias.
    """
    device = c.device
    tile = on_device(tile, device)
    width_a, width_b, dims, per_split = _layout(tile, m, n, k, trans_a, trans_b, plan, SPLIT_K,
                                                _ragged(m))
    has = (2 if bias_rows else 1) if has_bias else 0
    splits = math.ceil(k / per_split) if per_split < k else 1
    if 1 < splits and splits * m * n * 4 <= device.limits["max-storage-buffer-binding-size"]:
        # each split's raw sums into its own f32 slab; linalg/gemm_splitk adds them in order
        partial = Buffer.empty(splits * m * n, np.float32, device=device)
        _kernel(tile, trans_a, trans_b, width_a, width_b, dims, split=True).dispatch(
            (math.ceil(n / tile.bn), math.ceil(m / tile.bm), splits), a, b, bias, partial,
            m=m, n=n, k=k, a_base=plan.groups[0][0], a_outer=0, a_inner=0,
            b_base=plan.groups[0][1], b_outer=0, b_inner=0, c_base=0, inner=1, z_base=0,
            alpha=1.0, beta=0.0, has_bias=0, split_steps=per_split // tile.bk)
        finish = portable.finish_kernel(c.dtype)
        finish.dispatch(finish.groups_for(m * n), partial, bias, c, total=m * n, n=n,
                        splits=splits, alpha=alpha, beta=beta, has_bias=has, m=m)
        return
    kernel = _kernel(tile, trans_a, trans_b, width_a, width_b, dims)
    per_group = plan.outer * plan.inner
    max_z = device.limits["max-compute-workgroups-per-dimension"]
    grid_xy = (math.ceil(n / tile.bn), math.ceil(m / tile.bm))
    for g, (a_base, b_base) in enumerate(plan.groups):
        for z_base in range(0, per_group, max_z):
            kernel.dispatch(
                (*grid_xy, min(max_z, per_group - z_base)), a, b, bias, c,
                m=m, n=n, k=k,
                a_base=a_base, a_outer=plan.outer_strides[0], a_inner=plan.inner_strides[0],
                b_base=b_base, b_outer=plan.outer_strides[1], b_inner=plan.inner_strides[1],
                c_base=g * per_group * m * n, inner=plan.inner, z_base=z_base,
                alpha=alpha, beta=beta, has_bias=has, split_steps=0,
            )


def record_gemm_f32_out(a: Buffer[Any], b: Buffer[Any], c: Buffer[Any], *, m: int, n: int,
                        k: int, trans_b: bool, alpha: float, a_base: int = 0,
                        b_base: int = 0) -> None:
    """Record C (f32, m x n, from element 0) = alpha A op(B) for f16 A (m x k, from element
    a_base) and B (n x k with trans_b, else k x n, from b_base): f32 sums kept as f32, not
    rounded to f16 (attention's scores at wide head dims). The split-K kernel's raw store
    with one split, in the rule's f32-accumulating tile whatever accumulation() says."""
    device = c.device
    tile = choose_tile(m, n, 1, k=k, storage=device.limits["max-compute-workgroup-storage-size"],
                       invocations=device.limits["max-compute-invocations-per-workgroup"],
                       trans_b=trans_b)
    plan = BatchPlan(1, 1, 1, (0, 0), (0, 0), ((a_base, b_base),))
    width_a, width_b, dims, _ = _layout(tile, m, n, k, False, trans_b, plan, SPLIT_K,
                                        _ragged(m))
    if dims is not None and alpha == 1.0:  # the tile filled: accumulators straight to C
        tile = replace(tile, direct=True)
    tile = on_device(tile, device)
    _kernel(tile, False, trans_b, width_a, width_b, dims, split=True).dispatch(
        (math.ceil(n / tile.bn), math.ceil(m / tile.bm), 1), a, b,
        portable.no_bias(device, np.float16), c, m=m, n=n, k=k, a_base=a_base, a_outer=0,
        a_inner=0, b_base=b_base, b_outer=0, b_inner=0, c_base=0, inner=1, z_base=0,
        alpha=alpha, beta=0.0, has_bias=0, split_steps=math.ceil(k / tile.bk))


@functools.lru_cache(maxsize=4096)  # pure; every eager GEMM asks it
def _layout(tile: MatrixTile, m: int, n: int, k: int, trans_a: bool, trans_b: bool,
            plan: BatchPlan, split: bool,
            ragged: bool) -> tuple[int, int, tuple[int | None, int, int] | None, int]:
    """(A's and B's load widths, source's dims (kernel_dims), the K extent of a split) of
    record_gemm_matrix's product; `split`, `ragged`: SPLIT_K, RAGGED_KERNEL, keys of the
    answer."""
    offsets_a = (plan.outer_strides[0], plan.inner_strides[0], *(g[0] for g in plan.groups))
    offsets_b = (plan.outer_strides[1], plan.inner_strides[1], *(g[1] for g in plan.groups))
    width_a = load_width(tile, m if trans_a else k, offsets_a)
    width_b = load_width(tile, k if trans_b else n, offsets_b)
    dims = kernel_dims(tile, m, n, k, ragged)
    return width_a, width_b, dims, split_k(m, n, k, plan.count, tile.acc)


def record_gemm_parts(a: Buffer[Any], bs: list[Buffer[Any]], cs: list[Buffer[Any]], *,
                      m: int, n: int, k: int, tile: MatrixTile,
                      bias: Buffer[Any] | None = None) -> None:
    """Record cs[i] = a (m x k) bs[i]^T (each n x k) + bias[i * n:(i + 1) * n] for every i in
    one dispatch (workgroup z picks the pair; bias None: none): the shared-input projections
    of attention (q, k and v of x) fill the GPU as one product three times as wide. Each
    result equals record_gemm_matrix's with the same tile (and that part's bias) bit for bit
    (the same kernel body; the pair only chooses the buffers)."""
    tile = on_device(tile, a.device)
    width = load_width(tile, k, (0,))  # A and every B: rows of k, from element 0
    dims = kernel_dims(tile, m, n, k, _ragged(m))
    kernel = _kernel(tile, False, True, width, width, dims, parts=len(bs))
    has_bias = int(bias is not None)
    bias = bias if bias is not None else portable.no_bias(a.device, np.float16)
    kernel.dispatch((math.ceil(n / tile.bn), math.ceil(m / tile.bm), len(bs)),
                    a, bs[0], bias, cs[0], *bs[1:], *cs[1:],
                    m=m, n=n, k=k, a_base=0, a_outer=0, a_inner=0, b_base=0, b_outer=0,
                    b_inner=0, c_base=0, inner=1, z_base=0, alpha=1.0, beta=0.0,
                    has_bias=has_bias, split_steps=0)
