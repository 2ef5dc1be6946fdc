"""GEMM tile choice by the autotuner (gpucore.autotune): shape classes, candidates, trials.

The tuner sits above what it tunes: it imports the plan and the portable kernel, which never
import it; gpustd/gemm/dispatch.py asks it for the tile and hands that to the kernel.
plan_gemm's rule (gpustd/gemm/plan.py) gives the default; the tuner may swap its tile and main
loop for any other gemm.wgsl configuration that fits the device, measured fastest on this
adapter for the shape class. Why that never changes a result: every tile accumulates each
output over K in the same order (one fma per k, k ascending, in f32), and split-K cuts K at
multiples of plan.K_CHUNK whatever the tile, so only the number of splits orders the sum
differently -- and that is part of the shape class, fixed by the rule.
tests/gpucore/test_autotune.py checks every candidate bitwise against the default.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from gpucore import Buffer, Device, autotune

from . import matrix_units, portable
from .plan import ALL_TILES, TILES, Plan, Tile, batch_plan, k_partition, plan_gemm

__all__ = ["DTYPES", "OP", "SD_SHAPES", "bucket", "candidates", "choose", "parse", "problems",
           "shape_class", "tile_name"]

DTYPES = (np.dtype(np.float32), np.dtype(np.float16))
OP = "gemm"

# (m, k, n, batch, layout) of the GEMMs an SD 1.5 UNet step (2x4x64x64, CFG batch 2: tokens
# = 2 x h x w) and a 512x512 VAE decode run through gpustd.linalg; "nt" = x @ w.T (linear
# layers), "nn" = x @ w. Plus the square 4096 the benchmarks quote.
SD_SHAPES = [
    (8192, 320, 320, 1, "nt"), (8192, 320, 2560, 1, "nt"), (8192, 1280, 320, 1, "nt"),
    (2048, 640, 640, 1, "nt"), (2048, 640, 5120, 1, "nt"), (2048, 2560, 640, 1, "nt"),
    (512, 1280, 1280, 1, "nt"), (512, 1280, 10240, 1, "nt"), (512, 5120, 1280, 1, "nt"),
    (154, 768, 320, 1, "nt"), (154, 768, 1280, 1, "nt"), (2, 1280, 1280, 1, "nt"),
    (2, 320, 1280, 1, "nt"), (4096, 512, 512, 1, "nt"), (4096, 1280, 320, 1, "nn"),
    (4096, 4096, 4096, 1, "nn"),
]


def bucket(x: int) -> int:
    """x rounded up to the next 2^i or 1.5 x 2^i: sizes within ~25% share a tuned choice."""
    if x <= 4:
        return x
    power = 1 << (x - 1).bit_length()
    return 3 * power // 4 if x <= 3 * power // 4 else power


@functools.lru_cache(maxsize=4096)
def shape_class(dtype: np.dtype, m: int, n: int, k: int, batch: int, trans_a: bool,
                trans_b: bool, splits: int) -> str:
    """e.g. "float32/nt/m8192/n384/k384/b1/s1": dtype, layout, bucketed sizes, K splits."""
    layout = ("t" if trans_a else "n") + ("t" if trans_b else "n")
    return (f"{dtype.name}/{layout}/m{bucket(m)}/n{bucket(n)}/k{bucket(k)}/b{bucket(batch)}"
            f"/s{splits}")


def _name(tile_name: str, paired: bool) -> str:
    return f"{tile_name}/{'paired' if paired else 'plain'}"


@functools.cache
def tile_name(tile: Tile) -> str:
    """The name of `tile` in plan.ALL_TILES ("64x64t4")."""
    return next(name for name, known in ALL_TILES.items() if known == tile)


@functools.lru_cache(maxsize=16)
def candidates(workgroup_bytes: int) -> tuple[str, ...]:
    """Every tile x main loop whose workgroup tiles fit `workgroup_bytes`."""
    return tuple(_name(name, paired) for name, tile in ALL_TILES.items()
                 if tile.workgroup_bytes <= workgroup_bytes for paired in (False, True))


def parse(name: str) -> tuple[Tile, bool]:
    """("64x64t4/paired") -> (the tile, whether the main loop is paired)."""
    tile_name, loop = name.split("/")
    return ALL_TILES[tile_name], loop == "paired"


def choose(device: Device, dtype: np.dtype, m: int, n: int, k: int, batch: int,
           trans_a: bool, trans_b: bool, chosen: Plan, splits: int) -> tuple[Tile, bool]:
    """(tile, paired) for this GEMM: the tuner's winner for its class, else the rule's."""
    limit = device.limits["max-compute-workgroup-storage-size"]
    winner = autotune.select(
        device, OP, shape_class(dtype, m, n, k, batch, trans_a, trans_b, splits),
        candidates(limit), _default(chosen, limit),
        _trial_factory(device, dtype, m, n, k, batch, trans_a, trans_b, splits))
    return parse(winner)


def _default(chosen: Plan, workgroup_bytes: int) -> str:
    """The rule's choice as a candidate: its tile, or 64 x 64 where that does not fit (as
    record_gemm falls back)."""
    fits = chosen.tile.workgroup_bytes <= workgroup_bytes
    return _name(tile_name(chosen.tile if fits else TILES["64x64"]), chosen.paired)


def _trial_factory(device: Device, dtype: np.dtype, m: int, n: int, k: int, batch: int,
                   trans_a: bool, trans_b: bool, splits: int) -> autotune.Trial:
    """trial(name) -> one run of that candidate on random scratch operands of this shape."""
    scratch: list[Buffer[Any]] = []

    def trial(name: str) -> Any:
        if not scratch:
            rng = np.random.default_rng(0)
            for size in (batch * m * k, batch * k * n, batch * m * n):
                values = rng.standard_normal(size, dtype=np.float32).astype(dtype)
                scratch.append(Buffer.from_numpy(values, device=device))
        a, b, c = scratch
        tile, paired = parse(name)
        plan = batch_plan((batch,), (batch,), (batch,), m * k, k * n)
        return lambda: portable.record_gemm(a, b, c, None, m=m, n=n, k=k, trans_a=trans_a,
                                            trans_b=trans_b, alpha=1.0, beta=0.0, plan=plan,
                                            tile=tile, splits=splits, paired=paired)

    return trial


def problems(device: Device) -> list[autotune.Problem]:
    """The classes of SD_SHAPES on `device`, in float32 and, where the float16 GEMM runs on
    this kernel (shader-f16 without subgroup matrices), float16."""
    dtypes: list[np.dtype] = [np.dtype(np.float32)]
    if device.has_f16 and not matrix_units.available(device):
        dtypes.append(np.dtype(np.float16))
    limit = device.limits["max-compute-workgroup-storage-size"]
    found: dict[str, autotune.Problem] = {}
    for dtype in dtypes:
        for m, k, n, batch, layout in SD_SHAPES:
            trans_a, trans_b = layout[0] == "t", layout[1] == "t"
            chosen = plan_gemm(m, n, k, batch)
            splits, _ = k_partition(chosen.splits, k, batch * m * n, device)
            key = shape_class(dtype, m, n, k, batch, trans_a, trans_b, splits)
            found.setdefault(key, autotune.Problem(
                OP, key, candidates(limit), _default(chosen, limit),
                _trial_factory(device, dtype, m, n, k, batch, trans_a, trans_b, splits)))
    return list(found.values())


autotune.register(OP, problems)
