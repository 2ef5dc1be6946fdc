"""Basic indexing: `x[key]` and `x[key] = value`, and the strided copy behind them and
gpustd.permute; kernel in shaders/shape/strided_copy.wgsl.

A key of integers, slices (any step), `...` and `None` names a strided region of x's buffer:
an offset, and per axis of the result a length and a signed element stride. Reading copies
the region out (unless whole axes and new ones alone leave all of x in order: then the
result shares x's buffer, as a reshape does). Writing copies the value, converted to x's
dtype as numpy converts (floats truncated into integers) and broadcast to the region's
shape, into x's own buffer, so every Tensor sharing that buffer sees it. Keys with integer
arrays or boolean masks (numpy's advanced indexing) are gpustd.advanced_indexing's, which
builds on these.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Kernel, wgsl_scalar

from ._inplace import check_writable
from ._tensor import Tensor

__all__ = ["as_value", "getitem", "setitem", "strided_copy"]

_MAX_RANK = 6
Dims = list[tuple[int, int]]  # (length, element stride) per axis


def _region(shape: tuple[int, ...], key: Any) -> tuple[int, Dims]:
    """The offset and (length, stride) per result axis of basic index `key` into a C-ordered
    tensor of `shape`."""
    key = key if isinstance(key, tuple) else (key,)
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    named = sum(k is not None and k is not Ellipsis for k in key)
    if named > len(shape):
        raise IndexError(f"too many indices ({named}) for a {len(shape)}-d tensor")
    # `is`, not `in`/index(): those compare with ==, elementwise for a Tensor in the key
    at = next((i for i, k in enumerate(key) if k is Ellipsis), len(key))  # whole axes go there
    key = (*key[:at], *(slice(None),) * (len(shape) - named), *key[at + 1:])
    strides = [math.prod(shape[a + 1:]) for a in range(len(shape))]
    offset, axis, dims = 0, 0, []
    for k in key:
        if k is None:
            dims.append((1, 0))
            continue
        length = shape[axis]
        if isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
            if not -length <= k < length:
                raise IndexError(f"index {k} is out of bounds for axis {axis} of size {length}")
            offset += int(k) % length * strides[axis]
        elif isinstance(k, slice):
            start, stop, step = k.indices(length)
            count = len(range(start, stop, step))
            offset += start * strides[axis] if count else 0
            dims.append((count, step * strides[axis]))
        else:
            raise IndexError("only integers, slices (`:`), ellipsis (`...`), numpy.newaxis "
                             "(`None`) and integer or boolean arrays are valid indices, not "
                             f"{k!r}")
        axis += 1
    return offset, dims


def strided_copy(src: Tensor, src_offset: int, dst: Tensor, dst_offset: int,
                 dims: list[tuple[int, int, int]]) -> None:
    """dst[dst region] = src[src region]; dims: (length, src stride, dst stride) per axis,
    outermost first."""
    n = math.prod(d[0] for d in dims)
    if n == 0:
        return
    inner_first = [d for d in reversed(dims) if d[0] != 1]
    if src.dtype == np.complex64:  # bound as f32 pairs: strides and offsets in f32 units
        inner_first = [(2, 1, 1)] + [(e, 2 * s, 2 * d) for e, s, d in inner_first]
        n, src_offset, dst_offset = 2 * n, 2 * src_offset, 2 * dst_offset
    merged: list[tuple[int, int, int]] = []
    for extent, s, d in inner_first:
        if merged and s == merged[-1][1] * merged[-1][0] and d == merged[-1][2] * merged[-1][0]:
            merged[-1] = (merged[-1][0] * extent, merged[-1][1], merged[-1][2])
        else:
            merged.append((extent, s, d))
    if len(merged) > _MAX_RANK:
        raise IndexError(f"this copy leaves {len(merged)} strided dimensions; at most "
                         f"{_MAX_RANK} are supported (index or permute in two steps)")
    padded = merged + [(1, 0, 0)] * (_MAX_RANK - len(merged))
    params: dict[str, Any] = {f"e{k}": e for k, (e, _, _) in enumerate(padded)}
    params.update({f"s{k}": s for k, (_, s, _) in enumerate(padded)})
    params.update({f"d{k}": d for k, (_, _, d) in enumerate(padded)})
    kernel = Kernel.cached("shape/strided_copy", types={"T": wgsl_scalar(src.dtype)})
    kernel.dispatch(kernel.groups_for(n), src, dst, n=n, rank=len(merged),
                    src_offset=src_offset, dst_offset=dst_offset, **params)


def getitem(x: Tensor, key: Any) -> Tensor:
    """Basic indexing: integers, slices (any step), `...` and `None` (np.newaxis).
    numpy: `x[key]` (a copy here unless only whole axes are kept or added)."""
    offset, dims = _region(x.shape, key)
    shape = tuple(n for n, _ in dims)
    contiguous = [math.prod(shape[a + 1:]) for a in range(len(shape))]
    # shared only where no axis is indexed away (x[0] of a (1, n) tensor is a copy, as it
    # always was here: callers may write into x afterwards)
    if offset == 0 and math.prod(shape) == x.size and not _integers(key) and all(
            s == c for (n, s), c in zip(dims, contiguous) if n != 1):
        return x.reshape(shape)
    out = Tensor.empty(shape, x.dtype, device=x.device)
    strided_copy(x, offset, out, 0, [(n, s, c) for (n, s), c in zip(dims, contiguous)])
    return out


def _integers(key: Any) -> bool:
    return any(isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_))
               for k in (key if isinstance(key, tuple) else (key,)))


def as_value(x: Tensor, value: Any) -> Tensor:
    """`value` as a Tensor of x's dtype on x's device, numpy's setitem conversion (unsafe:
    2.7 becomes 2 in an int32 tensor; a Python int out of range raises)."""
    if isinstance(value, Tensor):
        if value.device is not x.device:
            raise ValueError("the value is on a different device from the tensor; move it "
                             "with .to(device)")
        if value.dtype != x.dtype:
            return value.astype(x.dtype)
        # a Tensor sharing x's buffer (a reshape of x) cannot be read by the kernel that writes
        return value.astype(x.dtype) if value.buffer is x.buffer else value
    data = np.array(value, dtype=x.dtype)
    return Tensor.from_numpy(data, device=x.device).reshape(data.shape)


def setitem(x: Tensor, key: Any, value: Any) -> None:
    """x[key] = value in x's own buffer, basic indexing as `getitem`'s.
    numpy: `x[key] = value`."""
    check_writable(x)
    offset, dims = _region(x.shape, key)
    shape = tuple(n for n, _ in dims)
    source = as_value(x, value)
    # numpy drops the value's leading length-1 axes, then broadcasts it to the region
    vshape = source.shape
    while len(vshape) > len(shape) and vshape[0] == 1:
        vshape = vshape[1:]
    padded = (1,) * (len(shape) - len(vshape)) + vshape
    if len(vshape) > len(shape) or any(v not in (1, n) for v, n in zip(padded, shape)):
        raise ValueError(f"could not broadcast input array from shape {source.shape} into "
                         f"shape {shape}")
    vstrides = [math.prod(padded[a + 1:]) if v != 1 else 0 for a, v in enumerate(padded)]
    strided_copy(source, 0, x, offset, [(n, v, s) for (n, s), v in zip(dims, vstrides)])
