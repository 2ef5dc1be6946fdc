"""How an advanced key (numpy's integer arrays and boolean masks) indexes a Tensor: the
entries told apart, masks checked against the axes they cover, and the plan that
gpustd.advanced_indexing reads and writes through: a basic key that leaves the indexed axes
whole, then one index list along those axes merged into one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import indexing
from ._tensor import Tensor, asarray
from .gather import checked_indices, host_indices
from .shape import permute

__all__ = ["Plan", "Region", "classify", "is_basic", "mask_alone"]

_NOT_INTEGER = "arrays used as indices must be of integer (or boolean) type"


def classify(k: Any) -> tuple[str, Any]:
    """("mask" | "array" | "basic", the entry as used): masks and arrays as Tensors or
    numpy arrays; a 0-d integer array is an integer."""
    if isinstance(k, Tensor):
        if k.dtype == np.uint32 and k.ndim:
            return "mask", k
        if k.dtype == np.int32:
            return "array", k
        raise IndexError(f"{_NOT_INTEGER}; a Tensor index must be int32 (or gpustd's bool, "
                         f"a uint32 Tensor of at least one axis), not {k.dtype}")
    if not isinstance(k, (np.ndarray, list, tuple)):
        return "basic", k
    array = np.asarray(k)
    if array.dtype == np.bool_ and array.ndim:
        return "mask", array
    if array.dtype.kind in "iu":
        return ("array", array) if array.ndim else ("basic", int(array))
    if array.size == 0 and not isinstance(k, np.ndarray):
        return "array", array.astype(np.int64)  # numpy takes [] as an empty integer index
    raise IndexError(_NOT_INTEGER)


def mask_alone(x: Tensor, key: Any) -> Any:
    """The mask when `key` is one mask (or a mask and `...`), checked against x's axes."""
    entries = key if isinstance(key, tuple) else (key,)
    if len(entries) == 2 and entries[1] is Ellipsis:
        entries = entries[:1]
    if len(entries) != 1 or isinstance(entries[0], tuple):
        return None
    kind, mask = classify(entries[0])
    if kind != "mask":
        return None
    check_mask(x, mask.shape, 0)
    return mask


def check_mask(x: Tensor, shape: tuple[int, ...], first: int) -> None:
    if first + len(shape) > x.ndim:
        raise IndexError(f"too many indices for array: array is {x.ndim}-dimensional, but "
                         f"{first + len(shape)} were indexed")
    for a, n in enumerate(shape):
        if x.shape[first + a] != n:
            raise IndexError(f"boolean index did not match indexed array along axis "
                             f"{first + a}; size of axis is {x.shape[first + a]} but size of "
                             f"corresponding boolean axis is {n}")


class Plan:
    """An advanced key resolved against x's shape: the basic key that leaves the indexed
    axes whole, where those axes stand afterwards, and the arrays indexing them."""

    def __init__(self, x: Tensor, key: Any) -> None:
        entries = [classify(k) for k in (key if isinstance(key, tuple) else (key,))]
        if sum(v is Ellipsis for _, v in entries) > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        consumed = sum(v.ndim if kind == "mask" else 0 if v is None or v is Ellipsis else 1
                       for kind, v in entries)
        if consumed > x.ndim:
            raise IndexError(f"too many indices for array: array is {x.ndim}-dimensional, "
                             f"but {consumed} were indexed")
        self.basic: list[Any] = []
        self.arrays: list[tuple[Any, int]] = []  # (index array, the x axis it indexes)
        advanced: list[int] = []
        y_axes: list[int | None] = []
        axis = 0
        for kind, v in entries:
            if v is Ellipsis:
                fill = x.ndim - consumed
                self.basic += [slice(None)] * fill
                y_axes += [None] * fill
                axis += fill
                continue
            if kind == "mask":
                check_mask(x, v.shape, axis)
                host = v.numpy() != 0 if isinstance(v, Tensor) else v
                for a, rows in enumerate(np.nonzero(host)):
                    advanced.append(len(self.basic))
                    y_axes.append(len(self.arrays))
                    self.arrays.append((rows, axis + a))
                    self.basic.append(slice(None))
                axis += v.ndim
                continue
            if kind == "array":
                advanced.append(len(self.basic))
                y_axes.append(len(self.arrays))
                self.arrays.append((v, axis))
                self.basic.append(slice(None))
            else:
                if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
                    advanced.append(len(self.basic))  # beside arrays, an integer is one too
                else:
                    y_axes.append(None)  # a slice or None leaves an axis in y
                self.basic.append(v)
            axis += v is not None
        self.basic += [slice(None)] * (x.ndim - axis)
        y_axes += [None] * (x.ndim - axis)
        # y = x[basic]: its axes are y_axes (the index of the array indexing it, or None)
        self.adjacent = advanced == list(range(advanced[0], advanced[-1] + 1))
        self.array_axes = [a for a, k in enumerate(y_axes) if k is not None]

    def order(self, ndim: int) -> list[int]:
        """y's axes with the indexed ones moved to the front where numpy puts the result
        axes there (arrays not adjacent in the key)."""
        if self.adjacent:
            return list(range(ndim))
        return self.array_axes + [a for a in range(ndim) if a not in self.array_axes]

    def flat_indices(self, lengths: tuple[int, ...]) -> tuple[Any, bool]:
        """One index array into the indexed axes merged (C order): (the array, whether it is
        host data, already checked and wrapped); an index Tensor alone stays on the device."""
        if len(self.arrays) == 1 and isinstance(self.arrays[0][0], Tensor):
            return self.arrays[0][0], False
        host: Sequence[Any] = [a.numpy() if isinstance(a, Tensor) else a for a, _ in self.arrays]
        try:
            host = np.broadcast_arrays(*host)
        except ValueError:
            shapes = " ".join(str(np.shape(a)) for a in host)
            raise IndexError("shape mismatch: indexing arrays could not be broadcast together "
                             f"with shapes {shapes}") from None
        flat = np.zeros(host[0].shape, np.int64)
        for array, (_, axis), length in zip(host, self.arrays, lengths):
            flat = flat * length + host_indices(array, length, axis)
        return flat, True


class Region:
    """y = x[plan.basic] with the indexed axes moved together (`order`: y's axes as x[basic]
    had them), viewed with those axes merged into axis `first`; `indices` index that axis
    (an int32 Tensor, checked), `host` their host copy where they came from the host."""

    def __init__(self, x: Tensor, plan: Plan) -> None:
        y = indexing.getitem(x, tuple(plan.basic))
        self.order = plan.order(y.ndim)
        if self.order != sorted(self.order):
            y = permute(y, self.order)
        k = len(plan.arrays)
        self.first = first = 0 if not plan.adjacent else plan.array_axes[0]
        self.shape = y.shape
        lengths = y.shape[first:first + k]
        indices, on_host = plan.flat_indices(lengths)
        self.host = indices if on_host else None
        if on_host:
            self.indices = asarray(indices.astype(np.int32), device=x.device).reshape(
                indices.shape)
        else:
            (array, axis), = plan.arrays
            self.indices = checked_indices(array, lengths[0], axis, x.device)
        self.y = y.reshape((*y.shape[:first], math.prod(lengths), *y.shape[first + k:]))

    def result_shape(self) -> tuple[int, ...]:
        shape = self.y.shape
        return shape[:self.first] + self.indices.shape + shape[self.first + 1:]


def is_basic(key: Any) -> bool:
    return all(classify(k)[0] == "basic" for k in (key if isinstance(key, tuple) else (key,)))
