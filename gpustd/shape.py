"""Data movement: transpose/permute/swapaxes, concatenate, split and slicing along an axis.

`reshape` is free (see Tensor.reshape); these copy, in one dispatch per input or output.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpucore import Kernel, wgsl_scalar

from ._tensor import Tensor, asarray
from .indexing import strided_copy

__all__ = ["concatenate", "matrix_transpose", "permute", "put_slice", "split", "swapaxes",
           "take_slice", "transpose"]


def _scalars_per_element(dtype: np.dtype) -> int:
    return 2 if dtype == np.complex64 else 1


def _axis(axis: int, ndim: int, op: str) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for a {ndim}-d tensor")
    return axis % ndim


def permute(x: Any, axes: Sequence[int] | None = None) -> Tensor:
    """Reorder dimensions (a copy; default reverses them). numpy: `np.transpose(x, axes)`."""
    x = asarray(x)
    axes = tuple(reversed(range(x.ndim))) if axes is None else tuple(int(a) for a in axes)
    if (len(axes) != x.ndim or not all(-x.ndim <= a < x.ndim for a in axes)
            or sorted(a % x.ndim for a in axes) != list(range(x.ndim))):
        raise ValueError(f"permute: axes {axes} are not a permutation of {x.ndim} dimensions")
    axes = tuple(a % x.ndim for a in axes)
    shape = tuple(x.shape[a] for a in axes)
    out = Tensor.empty(shape, x.dtype, device=x.device)
    if x.size == 0:
        return out
    if axes == tuple(range(x.ndim)):
        out.buffer.copy_from(x.buffer)
        return out
    # the copy walks the output contiguously and gathers: one strided copy (x[key]'s kernel),
    # which drops size-1 dims and merges the ones that stay adjacent in the input
    in_strides = [math.prod(x.shape[a + 1:]) for a in range(x.ndim)]
    out_strides = [math.prod(shape[d + 1:]) for d in range(x.ndim)]
    strided_copy(x, 0, out, 0, [(shape[d], in_strides[axes[d]], out_strides[d])
                                for d in range(x.ndim)])
    return out


def transpose(x: Any, axes: Sequence[int] | int | None = None) -> Tensor:
    """The axes reordered as `axes` says, all reversed when None (a copy).
    numpy: `np.transpose(x, axes)`; `swapaxes` swaps two, `matrix_transpose` the last two."""
    return permute(x, (axes,) if isinstance(axes, (int, np.integer)) else axes)


def swapaxes(x: Any, axis1: int, axis2: int) -> Tensor:
    """Swap two axes (a copy). numpy: `np.swapaxes(x, axis1, axis2)`."""
    x = asarray(x)
    axes = list(range(x.ndim))
    a, b = _axis(axis1, x.ndim, "swapaxes"), _axis(axis2, x.ndim, "swapaxes")
    axes[a], axes[b] = axes[b], axes[a]
    return permute(x, axes)


def matrix_transpose(x: Any) -> Tensor:
    """Each matrix of a stack transposed: the last two axes swapped (a copy).
    numpy: `np.matrix_transpose(x)`, `x.mT`."""
    x = asarray(x)
    if x.ndim < 2:
        raise ValueError(f"matrix_transpose needs at least 2 dimensions, got shape {x.shape}")
    return swapaxes(x, -2, -1)


def _copy_block(src: Tensor, dst: Tensor, rows: int, width: int, src_stride: int,
                src_offset: int, dst_stride: int, dst_offset: int) -> None:
    """copy_block.wgsl, four elements a lane (V = vec4<T>) where every extent and offset is a
    multiple of 4: one 2-byte load a lane ran the UNet's concatenations at a fraction of the
    memory's speed."""
    if rows * width == 0:
        return
    k = _scalars_per_element(src.dtype)  # complex64 binds as array<f32>: counted in pairs
    extents = tuple(k * v for v in (width, src_stride, src_offset, dst_stride, dst_offset))
    wide = all(v % 4 == 0 for v in extents)
    if wide:
        extents = tuple(v // 4 for v in extents)
    types = {"T": wgsl_scalar(src.dtype), "V": "vec4<T>" if wide else "T"}
    kernel = Kernel.cached("shape/copy_block", types=types)
    width, src_stride, src_offset, dst_stride, dst_offset = extents
    kernel.dispatch(kernel.groups_for(rows * width), src, dst, rows=rows, width=width,
                    src_stride=src_stride, src_offset=src_offset, dst_stride=dst_stride,
                    dst_offset=dst_offset)


def concatenate(tensors: Sequence[Any], axis: int | None = 0) -> Tensor:
    """Join tensors along an existing axis (None: flattened first).
    numpy: `np.concatenate(tensors, axis)`."""
    parts = [asarray(t) for t in tensors]
    if not parts:
        raise ValueError("concatenate needs at least one tensor")
    if axis is None:
        parts, axis = [p.reshape(-1) for p in parts], 0
    first = parts[0]
    axis = _axis(axis, first.ndim, "concatenate")
    for p in parts[1:]:
        if p.dtype != first.dtype:
            raise TypeError(f"concatenate: dtypes differ ({first.dtype} and {p.dtype}); "
                            "convert with astype first")
        if p.ndim != first.ndim or any(p.shape[d] != first.shape[d]
                                       for d in range(first.ndim) if d != axis):
            raise ValueError(f"concatenate: shapes {first.shape} and {p.shape} differ outside "
                             f"axis {axis}")
    total = sum(p.shape[axis] for p in parts)
    shape = (*first.shape[:axis], total, *first.shape[axis + 1:])
    out = Tensor.empty(shape, first.dtype, device=first.device)
    outer, inner = math.prod(shape[:axis]), math.prod(shape[axis + 1:])
    offset = 0
    for p in parts:
        width = p.shape[axis] * inner
        _copy_block(p, out, outer, width, width, 0, total * inner, offset)
        offset += width
    return out


def take_slice(x: Any, start: int, stop: int, axis: int = 0) -> Tensor:
    """A copy of `x[..., start:stop, ...]` along `axis` (step 1). numpy: basic slicing."""
    x = asarray(x)
    axis = _axis(axis, x.ndim, "take_slice")
    start, stop, _ = slice(start, stop).indices(x.shape[axis])
    stop = max(stop, start)
    shape = (*x.shape[:axis], stop - start, *x.shape[axis + 1:])
    out = Tensor.empty(shape, x.dtype, device=x.device)
    outer, inner = math.prod(x.shape[:axis]), math.prod(x.shape[axis + 1:])
    width = (stop - start) * inner
    _copy_block(x, out, outer, width, x.shape[axis] * inner, start * inner, width, 0)
    return out


def put_slice(out: Tensor, value: Any, start: int, axis: int = 0) -> None:
    """Write `value` into `out[..., start:start + n, ...]` along `axis` (n: value's length
    there; the other dimensions equal out's), in out's own buffer. The inverse of take_slice,
    a concatenation's one part. numpy: `out[(slice(None),) * axis + (slice(start, start +
    n),)] = value`."""
    value = asarray(value)
    axis = _axis(axis, out.ndim, "put_slice")
    length = value.shape[axis] if value.ndim == out.ndim else -1
    if (value.dtype != out.dtype or value.ndim != out.ndim or not 0 <= start <= out.shape[axis]
            - length or any(value.shape[d] != out.shape[d] for d in range(out.ndim)
                            if d != axis)):
        raise ValueError(f"put_slice: a {value.dtype} {value.shape} does not fit {out.dtype} "
                         f"{out.shape} from {start} along axis {axis}")
    outer, inner = math.prod(out.shape[:axis]), math.prod(out.shape[axis + 1:])
    width = length * inner
    _copy_block(value, out, outer, width, width, 0, out.shape[axis] * inner, start * inner)


def split(x: Any, sections: int | Sequence[int], axis: int = 0) -> list[Tensor]:
    """Split into equal sections or at indices. numpy: `np.split(x, sections, axis)`."""
    x = asarray(x)
    axis = _axis(axis, x.ndim, "split")
    length = x.shape[axis]
    if isinstance(sections, (int, np.integer)):
        if sections <= 0 or length % sections:
            raise ValueError(f"split: axis of length {length} does not divide into "
                             f"{sections} equal sections")
        bounds = [length // sections * i for i in range(sections + 1)]
    else:
        bounds = [0, *(int(i) for i in sections), length]
    return [take_slice(x, a, b, axis) for a, b in itertools.pairwise(bounds)]
