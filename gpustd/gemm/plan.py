"""GEMM plans, pure host logic: gemm.wgsl's tiles, the rule that picks tile, K splits and main
loop (plan_gemm), the split-K partition and the broadcast batch's mapping onto dispatches.

Nothing here touches a kernel: gpustd/gemm/portable.py records what a plan says, and
gpustd/gemm/tuning.py may swap the tile for one measured faster.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from gpucore import Device

__all__ = ["ALL_TILES", "EXTRA_TILES", "K_CHUNK", "MULTIPROCESSORS", "TILES", "WAVE", "BatchPlan",
           "Plan", "Tile", "batch_plan", "k_partition", "plan_gemm"]

# Multiprocessors (SMs) of the H100/H200 on which every fixed rule of the GEMM corner and of
# the convolutions was measured: the rules count waves of workgroups against this, whatever
# the device (a rule tuned for one GPU; the autotuner adapts to others).
MULTIPROCESSORS = 132
# About one wave of workgroups: from here a product's tiles fill the SMs (the matrix-unit
# GEMM's split_k leaves K whole; its and the conv's 160-wide tiles count as filling them).
WAVE = 0.95 * MULTIPROCESSORS


@dataclass(frozen=True)
class Tile:
    """Workgroup tile bm x bn (k step bk); each invocation computes tm x tn outputs."""

    bm: int
    bn: int
    bk: int
    tm: int
    tn: int

    def __post_init__(self) -> None:
        # What gemm.wgsl can express: 4 or 8 outputs per invocation each way, K steps of 8 or
        # 16, and 4, 8 or 16 elements of each K tile loaded per invocation (l_a, l_b).
        if (self.tm not in (4, 8) or self.tn not in (4, 8) or self.bk not in (8, 16)
                or self.bm % (4 * self.tm) or self.bn % (4 * self.tn)
                or self.l_a not in (4, 8, 16) or self.l_b not in (4, 8, 16)
                or self.wx < self.tm or self.wy < self.tn):
            raise ValueError(f"unsupported GEMM tile {self}")

    @property
    def wx(self) -> int:
        return self.bn // self.tn

    @property
    def wy(self) -> int:
        return self.bm // self.tm

    @property
    def invocations(self) -> int:
        return self.wx * self.wy

    @property
    def l_a(self) -> int:
        return self.bm * self.bk // self.invocations

    @property
    def l_b(self) -> int:
        return self.bn * self.bk // self.invocations

    @property
    def workgroup_bytes(self) -> int:
        return 2 * self.bk * (self.bm + self.bn) * 4  # two f32 buffers of each tile


TILES = {
    "128x128": Tile(128, 128, 8, 8, 8),
    "128x64": Tile(128, 64, 8, 8, 8),
    "64x64": Tile(64, 64, 8, 8, 8),
    "64x64t4": Tile(64, 64, 16, 4, 4),
    "32x32": Tile(32, 32, 8, 4, 4),
}
# More tiles gemm.wgsl expresses, which only the autotuner picks (gpustd/gemm/tuning.py).
EXTRA_TILES = {
    "128x128k16": Tile(128, 128, 16, 8, 8),
    "128x64k16": Tile(128, 64, 16, 8, 8),
    "64x128": Tile(64, 128, 8, 8, 8),
    "64x128k16": Tile(64, 128, 16, 8, 8),
    "64x64k16": Tile(64, 64, 16, 8, 8),
    "32x32k16": Tile(32, 32, 16, 4, 4),
}
ALL_TILES = {**TILES, **EXTRA_TILES}
# Split-K cuts K at multiples of this (every BK divides it), so which K range each split sums,
# and so every bit of the result, does not depend on the tile: tiles are interchangeable.
K_CHUNK = 16


@dataclass(frozen=True)
class Plan:
    """Tile, K splits (1: no split-K) and main-loop shape (gemm.wgsl's PAIRED) of one GEMM."""

    tile: Tile
    splits: int
    paired: bool


# The plan was tuned on an H200 through Vulkan (scratch sweep of every tile x 1-12 splits x
# both loop shapes over the SD 1.5 UNet's GEMMs, float32 and float16). What it found:
# - big outputs (>= 2 waves of 128 x 128 tiles) run best in 64 x 64 tiles of 8 x 8 per
#   invocation (4096^3: 4.87 ms against 5.13 for the previous kernel, and 128 x 128 tiles
#   6.07), with the paired loop once K is long;
# - short K on mid-size outputs (8192 x 320 x 320) wants the 4 x 4 tile's 256 invocations;
# - grids that do not fill the GPU split K (512 x 1280 x 1280: 80 us in 3 splits of 128 x 128
#   against 125 us unsplit) -- cost model below;
# - tiny M (time embeddings, the 77-token context) runs 32 x 32 tiles in up to 12 splits
#   (2 x 1280 x 1280: 20 us against 52 us).
_SPLITS = (1, 2, 3, 4, 6, 8, 12)
# Split-K cost model: workgroups that run at once (per GPU) and relative time per K tile for
# each tile, plus the partial sums' traffic; fitted to the sweep (its picks cost 4.6% over
# the best measured configuration on the UNet's GEMMs).
_CONCURRENT = {"128x128": 132, "128x64": 198, "64x64": 198, "32x32": 528}
_STEP_COST = {"128x128": 4.0, "128x64": 3.5, "64x64": 2.2, "32x32": 1.4}
_PARTIAL_COST = 4.0  # per million partial sums


@functools.lru_cache(maxsize=4096)  # pure; every eager GEMM asks it
def plan_gemm(m: int, n: int, k: int, batch: int) -> Plan:
    """The configuration that measured fastest for an m x k x n GEMM (see the notes above)."""
    def count(tile: Tile) -> int:
        return math.ceil(m / tile.bm) * math.ceil(n / tile.bn) * batch

    if count(TILES["128x128"]) >= 2 * MULTIPROCESSORS:
        return Plan(TILES["64x64"], 1, k >= 512)
    if count(TILES["64x64"]) >= 320 and k <= 384:
        return Plan(TILES["64x64t4"], 1, False)
    if count(TILES["64x64"]) >= 4 * MULTIPROCESSORS:
        return Plan(TILES["64x64"], 1, False)
    if count(TILES["64x64"]) >= 2 * MULTIPROCESSORS and k >= 1024 and min(m, n) <= 384:
        # H100 sweep (tools/gemm_sweep.py, 2026-11-23): 4096 x 1280 x 320 runs 0.148 ms in
        # 4 splits of 64 x 64 against 0.207 for the cost model's 4 splits of 128 x 128.
        return Plan(TILES["64x64"], 4, False)
    best = (math.inf, TILES["32x32"], 1)
    for name, concurrent in _CONCURRENT.items():
        tile = TILES[name]
        tiles = count(tile)
        # an empty K still costs each tile its epilogue: costed as one K tile, the smallest
        # tile wins (at 0 for every tile the first, 128 x 128, won: llvmpipe's costliest
        # compile, 2.4 s, for C = beta C + bias)
        k_tiles = max(1, math.ceil(k / tile.bk))
        for s in _SPLITS:
            if s > 1 and (tiles * s > 4 * MULTIPROCESSORS or k_tiles // s < 4):
                continue
            cost = (math.ceil(tiles * s / concurrent) * math.ceil(k_tiles / s)
                    * _STEP_COST[name])
            if s > 1:
                cost += _PARTIAL_COST * s * m * n * batch / 1e6
            if cost < best[0]:
                best = (cost, tile, s)
    return Plan(best[1], best[2], False)


def k_partition(splits: int, k: int, total: int, device: Device) -> tuple[int, int]:
    """(splits, K_CHUNK chunks per split) for at most `splits` splits of a K-long sum over
    `total` outputs: no empty split, and no split-K whose partial sums exceed a binding."""
    chunks = math.ceil(k / K_CHUNK)
    splits = min(splits, max(chunks, 1))
    per_split = math.ceil(chunks / splits) if chunks else 0
    splits = math.ceil(chunks / per_split) if chunks else 1
    if splits > 1 and splits * total * 4 > device.limits["max-storage-buffer-binding-size"]:
        return 1, chunks
    return splits, per_split


@dataclass(frozen=True)
class BatchPlan:
    """How the broadcast batch maps onto dispatches.

    `groups` lists (a_base, b_base) element offsets, one per dispatch group (more than one
    only when the broadcast pattern needs over two collapsed dims); within a group batch z
    splits into (z // inner, z % inner) with element strides `outer_strides`/`inner_strides`.
    """

    count: int  # total batch entries
    outer: int
    inner: int
    outer_strides: tuple[int, int]  # (a, b)
    inner_strides: tuple[int, int]
    groups: tuple[tuple[int, int], ...]


@functools.lru_cache(maxsize=4096)  # pure; every eager GEMM asks it
def batch_plan(out_batch: tuple[int, ...], a_batch: tuple[int, ...], b_batch: tuple[int, ...],
               a_matrix: int, b_matrix: int) -> BatchPlan:
    """Collapse broadcast batch dims (numpy rules) into at most two strided levels plus an
    explicit list of dispatch groups for any further levels. `X_matrix` = elements per matrix."""
    nd = len(out_batch)
    a_full = (1,) * (nd - len(a_batch)) + a_batch
    b_full = (1,) * (nd - len(b_batch)) + b_batch
    dims: list[tuple[int, int, int]] = []  # (size, a stride, b stride), innermost first
    stride_a, stride_b = a_matrix, b_matrix
    for d in reversed(range(nd)):
        if out_batch[d] != 1:
            dims.append((out_batch[d], stride_a if a_full[d] != 1 else 0,
                         stride_b if b_full[d] != 1 else 0))
        stride_a *= a_full[d]
        stride_b *= b_full[d]
    merged: list[tuple[int, int, int]] = []  # outermost first
    for size, sa, sb in reversed(dims):
        if merged:
            psize, pa, pb = merged[-1]
            if pa == sa * size and pb == sb * size:
                merged[-1] = (psize * size, sa, sb)
                continue
        merged.append((size, sa, sb))
    while len(merged) < 2:
        merged.insert(0, (1, 0, 0))
    (outer, oa, ob), (inner, ia, ib) = merged[-2], merged[-1]
    groups = [(0, 0)]
    for size, sa, sb in reversed(merged[:-2]):
        groups = [(ga + i * sa, gb + i * sb) for i in range(size) for ga, gb in groups]
    return BatchPlan(math.prod(out_batch), outer, inner, (oa, ob), (ia, ib), tuple(groups))
