"""The multi-pass driver behind gpustd.reduction: axis handling and reduce.wgsl passes.

Every reduction views its input as (outer, len, inner) and reduces len. One pass folds
chunks of up to 1024-4096 rows per workgroup (lanes accumulate a few rows serially, then meet
in a tree), writing (outer, chunks, inner) partials in f32 (or the integer dtype); passes
repeat until one chunk is left, so long axes stay parallel and the summation error grows
like a pairwise sum's, not like a serial loop's.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np

from gpucore import Buffer, Device, wgsl_scalar

from ._broadcast import cached_kernel
from ._tensor import Tensor

__all__ = ["View", "accumulator", "argreduce", "axis_groups", "placeholder", "pow2", "reduce",
           "view"]

SUM, MAX, MIN = 0, 1, 2  # reduce.wgsl OP
PRE_NONE, PRE_SQUARED_DEVIATION, PRE_EXP = 0, 1, 2
POST_NONE, POST_SCALE, POST_LOG_ADD, POST_SQRT_SCALE = 0, 1, 2, 3
# Rows one workgroup folds per pass. Contiguous rows go further (fewer trees and passes:
# 66 -> 42 us for sum over the rows of a 4096^2 f32 on an H200); strided columns stay at
# 1024 because a longer chunk there leaves too few workgroups to fill the GPU.
_ROWS_PER_PASS = {True: 4096, False: 1024}
_ITEMS_SHORT = 4  # rows per lane that a short contiguous row is given
_PARTS = ("reduction/layout",)  # both kernels' `//! parts:` line: where an invocation works

View = tuple[int, int, int]  # (outer, len, inner)
_placeholders: dict[tuple[Device, np.dtype], Buffer[Any]] = {}


def accumulator(dtype: np.dtype) -> np.dtype:
    """The dtype partial results are kept in: float32 for floats, else the dtype itself."""
    return np.dtype(np.float32) if dtype.kind == "f" else dtype


def placeholder(device: Device, dtype: Any) -> Buffer[Any]:
    """A one-element buffer to bind where a kernel declares a binding it will not read."""
    key = (device, np.dtype(dtype))
    if key not in _placeholders:
        _placeholders[key] = Buffer.zeros(1, dtype, device=device)
    return _placeholders[key]


def normalize_axes(axis: Any, ndim: int) -> tuple[int, ...]:
    """Sorted non-negative axes; ValueError for out-of-range or repeated ones."""
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    axes = []
    for a in items:
        try:
            a = operator.index(a)
        except TypeError:
            raise TypeError(f"axis must be an int, a tuple of ints or None, got {a!r}") from None
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of bounds for a tensor of rank {ndim}; use "
                             f"an axis in [{-ndim}, {ndim - 1}]")
        axes.append(a % ndim if ndim else a)
    if len(set(axes)) != len(axes):
        raise ValueError(f"repeated axis in {axis!r}")
    return tuple(sorted(axes))


def axis_groups(axes: tuple[int, ...]) -> list[tuple[int, int]]:
    """Runs of adjacent axes as (first, last + 1), innermost run first."""
    runs: list[list[int]] = []
    for a in axes:
        if runs and runs[-1][1] == a:
            runs[-1][1] = a + 1
        else:
            runs.append([a, a + 1])
    return [(a, b) for a, b in reversed(runs)]


def view(shape: tuple[int, ...], first: int, stop: int) -> View:
    """(outer, len, inner) of `shape` reducing axes first..stop-1."""
    return (math.prod(shape[:first]), math.prod(shape[first:stop]), math.prod(shape[stop:]))


def kept_shape(shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if k in axes else s for k, s in enumerate(shape))
    return tuple(s for k, s in enumerate(shape) if k not in axes)


def pow2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 << (max(n, 1) - 1).bit_length()


def _layout(outer: int, length: int, inner: int) -> dict[str, Any]:
    """Kernel geometry: the workgroup shape and one pass's params (strides included)."""
    if inner == 1:
        # Contiguous rows become columns walked with stride 1 by lanes on x; a short row
        # gets few lanes (and the workgroup several rows) instead of 256 mostly idle ones.
        outer, inner, strides = 1, outer, (0, 1, length)
        wy = min(256, pow2(math.ceil(length / _ITEMS_SHORT)))
        wx = min(256 // wy, pow2(inner))
        along_x = True
    else:
        strides = (length * inner, inner, 1)
        wx = min(32, pow2(inner))
        wy = 256 // wx
        along_x = False
    items = max(1, min(_ROWS_PER_PASS[along_x] // wy, math.ceil(length / wy)))
    return {"WX": wx, "WY": wy, "LANES_ON_X": along_x, "outer": outer, "len": length,
            "inner": inner, "s_outer": strides[0], "s_len": strides[1], "s_inner": strides[2],
            "chunks": math.ceil(length / (items * wy)), "tiles": math.ceil(inner / wx),
            "items": items}


def reduce(x: Tensor, shape: View, *, op: int, pre: int = PRE_NONE, post: int = POST_NONE,
           center: Tensor | None = None, scale: float = 1.0,
           out_dtype: Any = None) -> Tensor:
    """Reduce `x` (any shape, viewed as `shape`) along len; returns a flat (outer*inner,)
    Tensor of `out_dtype` (default: x's dtype). `center` is (outer*inner,) in the
    accumulator dtype when pre or post use it. len must be >= 1."""
    outer, length, inner = shape
    acc = accumulator(x.dtype)
    out_dtype = np.dtype(out_dtype or x.dtype)
    first = True
    while True:
        geo = _layout(outer, length, inner)
        shape_constants = {k: geo.pop(k) for k in ("WX", "WY", "LANES_ON_X")}
        final = geo["chunks"] == 1
        uses_center = (first and pre != PRE_NONE) or (final and post == POST_LOG_ADD)
        kernel = cached_kernel(
            "reduction/reduce",
            {"In": wgsl_scalar(x.dtype), "Acc": wgsl_scalar(acc),
             "Out": wgsl_scalar(out_dtype if final else acc)},
            {**shape_constants, "OP": op, "PRE": pre if first else PRE_NONE,
             "POST": post if final else POST_NONE, "USES_CENTER": uses_center},
            parts=_PARTS,
        )
        out = Tensor.empty((outer * geo["chunks"] * inner,), out_dtype if final else acc,
                           device=x.device)
        bound = center if uses_center else (x if x.dtype == acc else
                                           placeholder(x.device, acc))
        groups = geo["outer"] * geo["tiles"] * geo["chunks"]
        kernel.dispatch(groups, x, bound, out, scale=scale, **geo)
        if final:
            return out
        # Partials are (outer, chunks, inner) of the layout's view (rows may have become
        # columns), and the next pass reduces their chunks.
        x, length, first = out, geo["chunks"], False
        outer, inner = geo["outer"], geo["inner"]


def argreduce(x: Tensor, shape: View, *, op: int) -> Tensor:
    """Index of the max (op 0) or min (op 1) along len of `x` viewed as `shape`, as a flat
    int32 Tensor of outer*inner; ties give the first index. len must be >= 1."""
    outer, length, inner = shape
    acc = accumulator(x.dtype)
    indices: Tensor | None = None
    while True:
        geo = _layout(outer, length, inner)
        shape_constants = {k: geo.pop(k) for k in ("WX", "WY", "LANES_ON_X")}
        kernel = cached_kernel(
            "reduction/argreduce",
            {"In": wgsl_scalar(x.dtype), "Acc": wgsl_scalar(acc)},
            {**shape_constants, "OP": op, "FIRST": indices is None},
            parts=_PARTS,
        )
        size = outer * geo["chunks"] * inner
        values = Tensor.empty((size,), acc, device=x.device)
        found = Tensor.empty((size,), np.int32, device=x.device)
        given = indices if indices is not None else placeholder(x.device, np.int32)
        kernel.dispatch(geo["outer"] * geo["tiles"] * geo["chunks"], x, given, values, found,
                        **geo)
        if geo["chunks"] == 1:
            return found
        x, indices, length = values, found, geo["chunks"]
        outer, inner = geo["outer"], geo["inner"]
