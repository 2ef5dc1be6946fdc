"""GEMM driver for shaders/linalg/gemm.wgsl: tile choice, batch broadcasting, dispatch.

The public wrappers (gpustd.linalg.gemm / matmul) validate; this module only plans and records.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucore import Buffer, Device, Kernel, wgsl_scalar

__all__ = ["TILES", "BatchPlan", "Tile", "batch_plan", "choose_tile", "record_gemm"]


@dataclass(frozen=True)
class Tile:
    """Workgroup tile bm x bn (k step bk); each invocation computes tm x tn outputs."""

    bm: int
    bn: int
    bk: int
    tm: int
    tn: int

    def __post_init__(self) -> None:
        # What gemm.wgsl can express: 4 or 8 outputs per invocation each way, k steps of 4,
        # and at most 4 prefetched vec4 chunks of each tile per invocation.
        if self.tm not in (4, 8) or self.tn not in (4, 8) or self.bk % 4:
            raise ValueError(f"unsupported GEMM tile {self}")
        if max(self.bm, self.bn) * self.bk > 16 * self.invocations:
            raise ValueError(f"GEMM tile {self} needs more than 4 prefetch chunks per invocation")

    @property
    def invocations(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)


# Measured on an H200 through Vulkan (bench/gemm.py, scratch sweeps of tile shapes): big
# tiles win only with several waves of workgroups to keep all 132 multiprocessors (H100/H200)
# busy; the Stable Diffusion linears at 64x64 latents (e.g. 4096x640x640) run best with
# 64x64 tiles of 4x4 per invocation, small products (77x768x320) with 32x32.
TILES = {
    "128x128": Tile(128, 128, 16, 8, 8),
    "128x64": Tile(128, 64, 16, 8, 4),
    "64x64": Tile(64, 64, 16, 4, 4),
    "32x32": Tile(32, 32, 16, 4, 4),
}
_ONE_WAVE = 132  # workgroups: one per multiprocessor of an H100/H200


def choose_tile(m: int, n: int, batch: int) -> Tile:
    """The tile that measured fastest for this output size (see TILES)."""

    def count(name: str) -> int:
        return math.ceil(m / TILES[name].bm) * math.ceil(n / TILES[name].bn) * batch

    for name in ("128x128", "128x64"):
        if count(name) >= 512:  # about four waves
            return TILES[name]
    return TILES["64x64"] if count("64x64") >= _ONE_WAVE else TILES["32x32"]


_kernels: dict[tuple[Any, ...], Kernel] = {}


def _kernel(dtype: np.dtype, tile: Tile, trans_a: bool, trans_b: bool, vec_a: bool,
            vec_b: bool) -> Kernel:
    key = (dtype, tile, trans_a, trans_b, vec_a, vec_b)
    kernel = _kernels.get(key)
    if kernel is None:
        types = {"T": wgsl_scalar(dtype)}
        if not vec_a:
            types["AV"] = "T"
        if not vec_b:
            types["BV"] = "T"
        constants = {"BM": tile.bm, "BN": tile.bn, "BK": tile.bk, "TM": tile.tm, "TN": tile.tn,
                     "WG": tile.invocations, "TRANS_A": int(trans_a), "TRANS_B": int(trans_b),
                     "VEC_A": int(vec_a), "VEC_B": int(vec_b)}
        kernel = _kernels[key] = Kernel.load("linalg/gemm", constants=constants, types=types)
    return kernel


_no_bias: weakref.WeakKeyDictionary[Device, dict[np.dtype, Buffer[Any]]] = (
    weakref.WeakKeyDictionary())


def _placeholder(device: Device, dtype: np.dtype) -> Buffer[Any]:
    """A one-element buffer bound where no bias is given (has_bias = 0 keeps it unread)."""
    per_device = _no_bias.setdefault(device, {})
    if dtype not in per_device:
        per_device[dtype] = Buffer(1, dtype, device=device, read_only=True, label="no bias")
    return per_device[dtype]


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


def record_gemm(a: Buffer[Any], b: Buffer[Any], c: Buffer[Any], bias: Buffer[Any] | None, *,
                m: int, n: int, k: int, trans_a: bool, trans_b: bool, alpha: float, beta: float,
                plan: BatchPlan, tile: Tile | None = None) -> None:
    """Record C = alpha op(A) op(B) + beta C + bias for every batch entry (no validation)."""
    if m == 0 or n == 0 or plan.count == 0:
        return
    device = c.device
    per_group = plan.outer * plan.inner
    tile = tile or choose_tile(m, n, plan.count)
    # vec4 reads need the contiguous dimension (and so every row start) 16-byte aligned.
    vec_a = k > 0 and (m if trans_a else k) % 4 == 0
    vec_b = k > 0 and (k if trans_b else n) % 4 == 0
    kernel = _kernel(c.dtype, tile, trans_a, trans_b, vec_a, vec_b)
    bias_buffer = bias if bias is not None else _placeholder(device, c.dtype)
    max_z = device.limits["max-compute-workgroups-per-dimension"]
    grid_xy = (math.ceil(n / tile.bn), math.ceil(m / tile.bm))
    for g, (a_base, b_base) in enumerate(plan.groups):
        for z_base, z_count in _chunks(per_group, max_z):
            kernel.dispatch(
                (*grid_xy, z_count), a, b, bias_buffer, c,
                m=m, n=n, k=k,
                a_base=a_base, a_outer=plan.outer_strides[0], a_inner=plan.inner_strides[0],
                b_base=b_base, b_outer=plan.outer_strides[1], b_inner=plan.inner_strides[1],
                c_base=g * per_group * m * n, inner=plan.inner, z_base=z_base,
                alpha=alpha, beta=beta, has_bias=int(bias is not None),
            )


def _chunks(total: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(size, total - start)) for start in range(0, total, size)]

