"""numpy's advanced indexing: `x[key]` and `x[key] = value` where the key holds integer
arrays or boolean masks; keys of integers, slices, `...` and None alone go on to
gpustd.indexing (basic indexing).

An index array is an int32 Tensor or integer host data; a mask is gpustd's bool (a uint32
Tensor, nonzero meaning true) or numpy bool data covering one or more axes. numpy's rules
throughout: the arrays (and integers beside them) broadcast together, and their result axes
stand where the first of them stood when they are adjacent in the key, else in front; a
mask is its nonzero() arrays; an index out of range raises IndexError before anything is
written. The basic part of the key is applied first (gpustd.indexing), then one gather
along the indexed axes merged into one (gpustd.gather); an assignment scatters into that
region and writes it back.

A mask alone reads through flatnonzero on the GPU (its count is read back: the result's
size depends on the data); a mask assignment of one value or row needs no count at all:
it is where(mask, value, x). Index Tensors are checked through their min and max (read
back); several index arrays in one key are combined on the host (Tensors read back).
Where an index repeats in an assignment, numpy's last value wins for host indices; for an
index Tensor which one lands is unspecified.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import indexing
from ._index_plan import Plan, Region, is_basic, mask_alone
from ._inplace import check_writable
from ._tensor import Tensor, asarray
from .elementwise import where
from .gather import gather, scatter
from .scan import flatnonzero
from .shape import permute

__all__ = ["getitem", "setitem"]

def _mask_rows(x: Tensor, mask: Any) -> tuple[Tensor, Tensor]:
    """(x viewed as (mask elements, trailing axes...), the positions of the mask's true
    elements: an int32 Tensor)."""
    rows = x.reshape((math.prod(mask.shape), *x.shape[mask.ndim:]))
    if not isinstance(mask, Tensor):
        return rows, asarray(np.flatnonzero(mask).astype(np.int32), device=x.device)
    if mask.device is not x.device:
        raise ValueError("the mask is on a different device from the tensor; move it with "
                         ".to(device)")
    return rows, flatnonzero(mask)


def getitem(x: Tensor, key: Any) -> Tensor:
    """x[key] with numpy's advanced indexing (integer arrays, boolean masks) or basic
    indexing (gpustd.indexing). numpy: `x[key]` (always a copy where arrays index)."""
    mask = mask_alone(x, key)
    if mask is not None:
        return gather(*_mask_rows(x, mask), 0)
    if is_basic(key):
        return indexing.getitem(x, key)
    region = Region(x, Plan(x, key))
    return gather(region.y, region.indices, region.first)


def _shape_of(value: Any) -> tuple[int, ...]:
    return value.shape if isinstance(value, Tensor) else np.shape(value)


def _spelled(shape: tuple[int, ...]) -> str:
    """A shape as numpy's messages print it: (7,5), (3,)."""
    return f"({','.join(map(str, shape))}{',' if len(shape) == 1 else ''})"


def _values(x: Tensor, value: Any, shape: tuple[int, ...]) -> Tensor:
    """`value` broadcast to `shape` in x's dtype, contiguous (basic assignment's rules)."""
    if (isinstance(value, Tensor) and value.shape == shape and value.dtype == x.dtype
            and value.device is x.device):
        return value
    full = Tensor.empty(shape, x.dtype, device=x.device)
    try:
        indexing.setitem(full, Ellipsis, value)
    except ValueError as exc:
        if "could not broadcast" not in str(exc):
            raise
        raise ValueError(f"shape mismatch: value array of shape {_spelled(_shape_of(value))} "
                         "could not be broadcast to indexing result of shape "
                         f"{_spelled(shape)}") from None
    return full


def _last_of_repeats(region: Region, values: Tensor) -> tuple[Tensor, Tensor]:
    """(indices, values) where every index of the region's host indices appears once, with
    the last of its values, as numpy's x[idx] = v leaves it."""
    assert region.host is not None  # called where the indices came from the host
    flat = region.host.reshape(-1)
    _, last = np.unique(flat[::-1], return_index=True)
    if len(last) == len(flat):
        return region.indices, values
    keep = np.sort(len(flat) - 1 - last).astype(np.int32)
    first = region.first
    values = values.reshape((*values.shape[:first], len(flat),
                             *values.shape[first + region.indices.ndim:]))
    kept = gather(values, asarray(keep, device=values.device), first)
    return asarray(flat[keep].astype(np.int32), device=values.device), kept


def setitem(x: Tensor, key: Any, value: Any) -> None:
    """x[key] = value in x's own buffer, with numpy's advanced indexing (integer arrays,
    boolean masks: one value per selected element, or broadcast) or basic indexing.
    numpy: `x[key] = value`."""
    check_writable(x)
    mask = mask_alone(x, key)
    if mask is not None:
        if _fits_row(x, mask.ndim, value):
            _assign_where(x, mask, value)
            return
        rows, indices = _mask_rows(x, mask)
        shape = (indices.size, *rows.shape[1:])
        given = _shape_of(value)
        if len(shape) == len(given) == 1 and given != shape:
            raise ValueError(f"NumPy boolean array indexing assignment cannot assign "
                             f"{given[0]} input values to the {indices.size} output values "
                             "where the mask is true")
        scatter(rows, indices, _values(x, value, shape), 0)
        return
    if is_basic(key):
        indexing.setitem(x, key, value)
        return
    plan = Plan(x, key)
    region = Region(x, plan)
    values = _values(x, value, region.result_shape())
    indices = region.indices
    if region.host is not None:
        indices, values = _last_of_repeats(region, values)
    scatter(region.y, indices, values, region.first)
    if region.y.buffer is x.buffer:  # x[basic] was a view of x: the scatter wrote x itself
        return
    back = region.y.reshape(region.shape)
    if region.order != sorted(region.order):
        back = permute(back, [int(a) for a in np.argsort(region.order)])
    indexing.setitem(x, tuple(plan.basic), back)


def _fits_row(x: Tensor, mask_ndim: int, value: Any) -> bool:
    """Whether `value` broadcasts to the axes after a mask's (one value for every selected
    element: no count needed)."""
    shape = _shape_of(value)
    trailing = x.shape[mask_ndim:]
    while shape and shape[0] == 1 and len(shape) > len(trailing):
        shape = shape[1:]
    return len(shape) <= len(trailing) and all(
        v in (1, n) for v, n in zip(shape[::-1], trailing[::-1]))


def _assign_where(x: Tensor, mask: Any, value: Any) -> None:
    """x[mask] = value, value one element or a row of x's trailing axes (`_fits_row`):
    numpy's result, written as where(mask, value, x)."""
    trailing = x.shape[mask.ndim:]
    source = indexing.as_value(x, value)
    vshape = source.shape
    while vshape and vshape[0] == 1 and len(vshape) > len(trailing):
        vshape = vshape[1:]
    condition = asarray(mask, device=x.device) if not isinstance(mask, Tensor) else mask
    condition = condition.reshape(mask.shape + (1,) * len(trailing))
    x.buffer.copy_from(where(condition, source.reshape(vshape), x).buffer)
