"""Rows picked by integer indices along one axis, and rows written back: numpy's `take`, and
the inverse behind `x[idx] = values`; kernel in shaders/shape/gather.wgsl.

`take` checks its indices as numpy does, before any GPU work: host indices on the host, an
int32 Tensor through its min and max (two numbers read back). `gather` and `scatter` take
indices already checked (`checked_indices`, or positions `flatnonzero` found).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Kernel, wgsl_scalar

from . import reduction
from ._tensor import Tensor, asarray

__all__ = ["checked_indices", "gather", "host_indices", "scatter", "take"]


def _axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise np.exceptions.AxisError(axis, ndim)
    return int(axis) % ndim


def _out_of_bounds(index: int, axis: int, length: int) -> IndexError:
    return IndexError(f"index {index} is out of bounds for axis {axis} with size {length}")


def host_indices(indices: Any, length: int, axis: int) -> np.ndarray:
    """Integer array-like `indices` as int64 in [0, length): negative ones counted from the
    end, IndexError (numpy's message) for any outside [-length, length)."""
    host = np.asarray(indices)
    if host.size == 0 and host.dtype.kind not in "iu":
        host = host.astype(np.int64)  # numpy takes [] as an empty integer index
    if host.dtype.kind not in "iu":
        raise IndexError("arrays used as indices must be of integer (or boolean) type")
    host = host.astype(np.int64)
    bad = (host < -length) | (host >= length)
    if bad.any():
        raise _out_of_bounds(int(host[bad].flat[0]), axis, length)
    return np.where(host < 0, host + length, host)


def checked_indices(indices: Any, length: int, axis: int, device: Any) -> Tensor:
    """`indices` (an int32 Tensor, or integer array-like) as an int32 Tensor on `device`
    whose every index lies in [-length, length); IndexError, numpy's, names one that does
    not and the `axis` it is for. Reads two numbers back for a Tensor."""
    if not isinstance(indices, Tensor):
        host = host_indices(indices, length, axis).astype(np.int32)
        return asarray(host, device=device).reshape(host.shape)
    if indices.dtype != np.int32:
        raise IndexError("arrays used as indices must be of integer (or boolean) type; "
                         f"an index Tensor must be int32, not {indices.dtype}")
    if indices.size:
        low, high = int(reduction.min(indices)), int(reduction.max(indices))
        if high >= length or low < -length:
            raise _out_of_bounds(high if high >= length else low, axis, length)
    return indices


def _dispatch(src: Tensor, indices: Tensor, dst: Tensor, shape: tuple[int, ...], axis: int,
              *, scatter: bool) -> None:
    """gather.wgsl over x of `shape` viewed as (outer, len, inner) around `axis`."""
    count = indices.size
    inner = math.prod(shape[axis + 1:]) * (2 if src.dtype == np.complex64 else 1)  # f32 pairs
    n = math.prod(shape[:axis]) * count * inner
    if n == 0:
        return
    kernel = Kernel.cached("shape/gather", types={"T": wgsl_scalar(src.dtype)},
                           constants={"SCATTER": scatter})
    kernel.dispatch(kernel.groups_for(n), src, indices, dst, n=n, count=count,
                    len=shape[axis], inner=inner)


def gather(x: Tensor, indices: Tensor, axis: int) -> Tensor:
    """x's rows `indices` (an int32 Tensor of checked indices, any shape) along `axis`:
    shape x.shape[:axis] + indices.shape + x.shape[axis + 1:]."""
    out = Tensor.empty(x.shape[:axis] + indices.shape + x.shape[axis + 1:], x.dtype,
                       device=x.device)
    _dispatch(x, indices, out, x.shape, axis, scatter=False)
    return out


def scatter(x: Tensor, indices: Tensor, values: Tensor, axis: int) -> None:
    """x's rows `indices` (int32, checked) along `axis` overwritten, in x's own buffer, by
    `values` of shape x.shape[:axis] + indices.shape + x.shape[axis + 1:] and x's dtype. Where
    an index repeats, which of its values lands is unspecified. torch: `x.index_copy_`."""
    if values.buffer is x.buffer:  # one buffer cannot be bound for reading and writing
        values = values.astype(values.dtype)
    _dispatch(values, indices.reshape(-1), x, x.shape, axis, scatter=True)


def take(x: Any, indices: Any, axis: int | None = None) -> Tensor:
    """Elements of x at integer `indices` (an int32 Tensor or array-like, any shape;
    negative ones count from the end) along `axis`, of the flattened x when None: shape
    x.shape[:axis] + indices.shape + x.shape[axis + 1:]. IndexError for an index out of
    range, as numpy's mode='raise'. numpy: `np.take(x, indices, axis)`."""
    x = asarray(x)
    if axis is None:
        x, axis = x.reshape(-1), 0
    axis = _axis(axis, x.ndim)
    checked = checked_indices(indices, x.shape[axis], axis, x.device)
    if checked.device is not x.device:
        raise ValueError("the indices are on a different device from the tensor; move them "
                         "with .to(device)")
    return gather(x, checked, axis)
