"""Cumulative sums along an axis, and flatnonzero (a scan, then a compaction); kernels in
shaders/reduction/scan.wgsl, scan_add.wgsl and scan_compact.wgsl.

A work-sharing parallel scan: each workgroup scans a block of up to 1024 rows of one column and
emits the block total; columns longer than one block scan their totals recursively (the
same function, on a 1024x shorter axis) and add them back. Floats accumulate in f32.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import wgsl_scalar

from . import _reduce as r
from ._broadcast import cached_kernel
from ._tensor import Tensor
from .elementwise import not_equal
from .unary import _tensor

__all__ = ["cumsum", "flatnonzero"]

_ITEMS = 4  # rows each lane scans serially


def _scan(x: Tensor, outer: int, length: int, inner: int) -> Tensor:
    """Inclusive scan of x, viewed as (outer, length, inner), along length (flat result)."""
    acc = r.accumulator(x.dtype)
    # Short axes get a smaller workgroup instead of a 1024-row block that is mostly empty.
    wg = min(256, max(32, r.pow2(math.ceil(length / _ITEMS))))
    block = wg * _ITEMS
    columns, blocks = outer * inner, math.ceil(length / block)
    out = Tensor.empty((x.size,), x.dtype, device=x.device)
    sums = Tensor.empty((columns * blocks,), acc, device=x.device)
    kernel = cached_kernel("reduction/scan", {"T": wgsl_scalar(x.dtype), "Acc": wgsl_scalar(acc)},
                           {"WG": wg, "ITEMS": _ITEMS})
    kernel.dispatch(columns * blocks, x, out, sums, columns=columns, len=length, inner=inner,
                    blocks=blocks)
    if blocks > 1:
        offsets = _scan(sums, columns, blocks, 1)
        add = cached_kernel("reduction/scan_add",
                            {"T": wgsl_scalar(x.dtype), "Acc": wgsl_scalar(acc)}, {})
        add.dispatch(add.groups_for(x.size), offsets, out, n=x.size, len=length, inner=inner,
                     blocks=blocks, block_len=block)
    return out


def cumsum(x: Any, axis: int | None = None) -> Tensor:
    """Running sum along `axis` (None: over the flattened tensor, giving 1-D), same dtype
    as x (float16 accumulates in f32; integers wrap). numpy: `np.cumsum`."""
    x = _tensor(x)
    if axis is None:
        x = x.reshape(-1) if x.size else Tensor.empty((0,), x.dtype, device=x.device)
        axis = 0
    if not isinstance(axis, (int, np.integer)):
        raise TypeError(f"cumsum takes an int axis or None, got {axis!r}")
    (a,) = r.normalize_axes(axis, x.ndim)
    if x.size == 0:
        return Tensor.empty(x.shape, x.dtype, device=x.device)
    outer, length, inner = r.view(x.shape, a, a + 1)
    return _scan(x, outer, length, inner).reshape(x.shape)


def flatnonzero(x: Any) -> Tensor:
    """Indices (int32, 1-D, ascending) of the nonzero elements of the flattened x (NaN is
    nonzero). The result's length depends on the data: it is read back (one number), so this
    waits for the work before it. numpy: `np.flatnonzero` (which gives int64).

    The flags' inclusive scan gives each nonzero element its place in the result."""
    x = _tensor(x)
    if x.size == 0:
        return Tensor.empty((0,), np.int32, device=x.device)
    flags = not_equal(x.reshape(-1), 0)
    ends = _scan(flags, 1, x.size, 1)
    last = x.device.read_bytes(ends.buffer.wgpu, 4 * (x.size - 1), 4)
    count = int(np.frombuffer(last, np.uint32)[0])
    out = Tensor.empty((count,), np.int32, device=x.device)
    if count:
        kernel = cached_kernel("reduction/scan_compact", {}, {})
        kernel.dispatch(kernel.groups_for(x.size), flags, ends, out, n=x.size)
    return out
