"""Tile choice of the f16 subgroup-matrix GEMM by the autotuner (gpucore.autotune): op
"gemm_sm", its shape classes, candidates and trials, and the helpers that the conv2d kernel's
tuner (gpustd/nn/_conv_matrix_tuning.py, op "conv_sm") shares.

Above the kernels it tunes: gpustd/gemm/dispatch.py asks gemm_tile and hands the tile to
matrix_units.record_gemm_matrix, which never imports this module. The fixed rules
(gpustd/gemm/matrix_units.choose_tile, nn/_conv_subgroup_matrix.choose_conv_tile) give the
default; which tile is fastest depends on Dawn's toggles (on an
H100, 128 x 128 wins 4096^3 with disable_robustness, 64 x 64 without: tools/sm_sweep.py),
which a tuner keyed by runtime, adapter and driver absorbs.

Why no candidate changes a result. Every candidate is a tile of gpustd/gemm/matrix_codegen.py's
generator with f32 accumulators and K steps (BK) that are multiples of 16; they differ only in
how many fragments a subgroup holds, how many subgroups a workgroup has and how deep a
staged K step is. In the generated kernel each 16 x 16 output fragment has one accumulator,
zero-initialized, and each K step's unrolled code multiplies its 16-deep slices in ascending
order (kk = 0, 16, ..., BK - 16) while the K loop steps ascending: so every candidate adds
the same 16 x 16 x 16 fragment products -- same fragment position (tiles and fragment
offsets are multiples of 16), same operands (staging copies values, zero outside the
matrix) -- into each output in the same ascending order of K slices, through the same
subgroupMatrixMultiplyAccumulate. The only difference: with BK = 32 a K that is not a
multiple of 32 gets one more slice than with BK = 16, whose operands are all zeros; its
products are +0, and adding +0 to the accumulator changes nothing (it starts at +0, and a
sum of f16 products is never -0 nor an f32 subnormal, so x + 0 = x bit for bit). The
epilogue (alpha, beta, bias, residual, rounding to f16) is the same code for every tile.
What would change the order is not a candidate: split K, and f16 accumulators beside f32 ones.
With GPUSTD_GEMM_ACCUMULATE=f16 (matrix_units.accumulation) every candidate accumulates in f16
(GEMM_TILES_ACC16, classes suffixed "/acc16"): the same argument holds with each fragment
product rounded into an f16 accumulator in the same order.
tests/gpustd/test_matrix_tuning.py checks every candidate bitwise against the default on the GPU.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable

import numpy as np

from gpucore import Buffer, Device, autotune

from .._tensor import Tensor
from . import matrix_units, portable
from .matrix_codegen import MatrixTile
from .plan import batch_plan
from .tuning import SD_SHAPES, bucket

Shape = tuple[int, ...]
Pair = tuple[int, int]

__all__ = ["GEMM_OP", "GEMM_TILES", "GEMM_TILES_ACC16", "Pair", "Shape", "fits",
           "gemm_candidates", "gemm_class", "gemm_tile", "problems", "shared_scratch", "tile_name"]

GEMM_OP = "gemm_sm"
# The shipped GEMM tiles (128 x 128 with K steps of 16 among them), and those with f16
# accumulators that GPUSTD_GEMM_ACCUMULATE=f16 takes instead.
GEMM_TILES = dict(matrix_units.TILES)
GEMM_TILES_ACC16 = dict(matrix_units.ACC16_TILES)


def _tiles(accumulate: str) -> dict[str, MatrixTile]:
    return GEMM_TILES_ACC16 if accumulate == "f16" else GEMM_TILES

# -- shape classes and candidates ------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def gemm_class(m: int, n: int, k: int, batch: int, trans_a: bool, trans_b: bool,
               accumulate: str = "f32") -> str:
    """e.g. "f16/nt/m8192/n384/k384/b1": layout and sizes bucketed as gpustd.gemm.tuning's
    ("/acc16" after it with f16 accumulators)."""
    layout = ("t" if trans_a else "n") + ("t" if trans_b else "n")
    return (f"f16/{layout}/m{bucket(m)}/n{bucket(n)}/k{bucket(k)}/b{bucket(batch)}"
            + ("/acc16" if accumulate == "f16" else ""))


def fits(device: Device, tile: MatrixTile, grid: tuple[int, int]) -> bool:
    """Whether `tile`'s workgroup and a grid of `grid` workgroups fit `device`'s limits."""
    limits = device.limits
    return (tile.shared_bytes() <= limits["max-compute-workgroup-storage-size"]
            and tile.threads <= limits["max-compute-invocations-per-workgroup"]
            and max(grid) <= limits["max-compute-workgroups-per-dimension"])


def gemm_candidates(device: Device, m: int, n: int, accumulate: str = "f32") -> tuple[str, ...]:
    """The GEMM_TILES (GEMM_TILES_ACC16 with f16 accumulators) whose workgroup and grid fit
    `device` for an m x n output."""
    return tuple(name for name, t in _tiles(accumulate).items()
                 if fits(device, t, (math.ceil(n / t.bn), math.ceil(m / t.bm))))


def tile_name(tiles: dict[str, MatrixTile], tile: MatrixTile) -> str:
    """`tile`'s name in `tiles`."""
    return next(name for name, known in tiles.items() if known == tile)


def _rule(device: Device, m: int, n: int, k: int, batch: int, accumulate: str = "f32",
          trans_b: bool = True) -> str:
    """choose_tile's tile for this product among those `device`'s workgroup memory holds."""
    limits = device.limits
    return tile_name(_tiles(accumulate), matrix_units.choose_tile(
        m, n, batch, k=k, storage=limits["max-compute-workgroup-storage-size"],
        invocations=limits["max-compute-invocations-per-workgroup"], accumulate=accumulate,
        trans_b=trans_b))


# -- what the kernels ask ----------------------------------------------------------------
def gemm_tile(device: Device, m: int, n: int, k: int, batch: int, trans_a: bool,
              trans_b: bool) -> MatrixTile:
    """The tile of record_gemm_matrix for this GEMM: the tuner's winner for its class, else
    choose_tile's; f16 accumulators where GPUSTD_GEMM_ACCUMULATE=f16."""
    accumulate = matrix_units.accumulation(device)
    # The rule's tile, the candidates and the class depend on the shape and the device's
    # limits only: worked out once per shape (an eager model asks for every GEMM of every
    # step, and fitting the candidates took more host time than recording the dispatch).
    # (RAGGED_M in the key: bench/zimage.py times the step under other values of it)
    key = (m, n, k, batch, trans_a, trans_b, accumulate, matrix_units.RAGGED_M)
    known: dict[tuple, tuple[str, tuple[str, ...], str]] = device.keep(_DECIDED, dict)
    fixed = known.get(key)
    if fixed is None:
        fixed = known[key] = (
            _rule(device, m, n, k, batch, accumulate, trans_b),
            gemm_candidates(device, m, n, accumulate),
            gemm_class(m, n, k, batch, trans_a, trans_b, accumulate))
    default, candidates, shape_class = fixed
    winner = autotune.select(
        device, GEMM_OP, shape_class, candidates, default,
        lambda name: _gemm_trial(device, m, n, k, batch, trans_a, trans_b, accumulate)(name))
    return _tiles(accumulate)[winner]


_DECIDED = "gemm_sm rule, candidates and class by shape"


# -- trials -------------------------------------------------------------------------------
class _Scratch:
    """Operands shared by one tuning's candidates and freed with their runs: the trial keeps
    only a weak reference (`python -m gpucore tune` holds every problem at once)."""

    def __init__(self, device: Device, shapes: tuple[Shape, ...]) -> None:
        self.tensors = [Tensor(Buffer.from_numpy(_random_f16(math.prod(shape)), device=device),
                               shape) for shape in shapes]


def _random_f16(size: int) -> np.ndarray:
    """Normal f16 values, a random block repeated: timing needs realistic non-zero values,
    not independent ones, and drawing 10^8 normals would take longer than the timing."""
    block = np.random.default_rng(0).standard_normal(min(size, 1 << 16), dtype=np.float32)
    return np.resize(block.astype(np.float16), size)


def shared_scratch(device: Device, shapes: tuple[Shape, ...]) -> Callable[[], _Scratch]:
    """get() -> the scratch operands, made on first use and while no run holds them."""
    ref: Callable[[], _Scratch | None] = lambda: None  # noqa: E731

    def get() -> _Scratch:
        nonlocal ref
        scratch = ref()
        if scratch is None:
            scratch = _Scratch(device, shapes)
            ref = weakref.ref(scratch)
        return scratch

    return get


def _gemm_trial(device: Device, m: int, n: int, k: int, batch: int, trans_a: bool,
                trans_b: bool, accumulate: str = "f32") -> autotune.Trial:
    """trial(name) -> one run of that GEMM tile on scratch operands of this shape."""
    scratch = shared_scratch(device, ((batch * m * k,), (batch * k * n,), (batch * m * n,)))
    plan = batch_plan((batch,), (batch,), (batch,), m * k, k * n)

    def trial(name: str) -> Callable[[], None]:
        held, tile = scratch(), _tiles(accumulate)[name]

        def run() -> None:
            a, b, c = (t.buffer for t in held.tensors)
            # no bias: the placeholder record_gemm binds (c may not be bound twice)
            matrix_units.record_gemm_matrix(
                a, b, c, portable.no_bias(device, c.dtype), has_bias=False, m=m, n=n, k=k,
                trans_a=trans_a, trans_b=trans_b, alpha=1.0, beta=0.0, plan=plan, tile=tile)

        return run

    return trial


# -- registration ---------------------------------------------------------------------------
def problems(device: Device) -> list[autotune.Problem]:
    """gemm_sm's classes of gpustd.gemm.tuning.SD_SHAPES, on a device with f16 subgroup
    matrices; none elsewhere (the kernels cannot run there)."""
    if not matrix_units.available(device):
        return []
    accumulate = matrix_units.accumulation(device)
    found: dict[str, autotune.Problem] = {}
    for m, k, n, batch, layout in SD_SHAPES:
        trans_a, trans_b = layout[0] == "t", layout[1] == "t"
        key = gemm_class(m, n, k, batch, trans_a, trans_b, accumulate)
        default = _rule(device, m, n, k, batch, accumulate, trans_b)
        found.setdefault(key, autotune.Problem(
            GEMM_OP, key, gemm_candidates(device, m, n, accumulate), default,
            _gemm_trial(device, m, n, k, batch, trans_a, trans_b, accumulate)))
    return list(found.values())


autotune.register(GEMM_OP, problems)
