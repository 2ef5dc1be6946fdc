"""Operand checks shared by gpustd.linalg's wrappers: dtype, device, aliasing, size limits."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import DeviceLimitError, default_device

from ._tensor import Tensor

__all__ = ["check_size", "distinct", "tensors", "writable"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float16))


def tensors(op: str, *items: tuple[str, Any]) -> list[Tensor]:
    """Tensors for the named operands, checked to share one float dtype and one device.

    Non-Tensor operands (numpy arrays, lists) are uploaded to the device of the first Tensor,
    after the checks; float64 data counts as float32 (GPUs have no float64).
    """
    device = next((v.device for _, v in items if isinstance(v, Tensor)), None) or default_device()
    hosts = {name: np.asarray(v) for name, v in items if not isinstance(v, Tensor)}
    dtypes = []
    for name, value in items:
        if isinstance(value, Tensor):
            if value.device is not device:
                raise ValueError(f"{op}: {name} is on {value.device.name}, the others on "
                                 f"{device.name}; move it with .to(device)")
            dtype = value.dtype
        else:
            dtype = hosts[name].dtype
            dtype = np.dtype(np.float32) if dtype == np.float64 else dtype
        if dtype not in _FLOATS:
            raise TypeError(f"{op}: {name} has dtype {dtype}; linalg takes float32 or float16 "
                            "(convert with .astype(np.float32))")
        dtypes.append(dtype)
    if len(set(dtypes)) > 1:
        found = ", ".join(f"{name} {d}" for (name, _), d in zip(items, dtypes))
        raise TypeError(f"{op}: operands must share one dtype, got {found}; convert with .astype")
    return [v if isinstance(v, Tensor) else Tensor.from_numpy(hosts[name], dtype=d, device=device)
            for (name, v), d in zip(items, dtypes)]


def writable(op: str, name: str, value: Any) -> Tensor:
    """`value` if it can be updated in place (a Tensor that is not read_only)."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}: {name} is updated in place and must be a gpustd Tensor, "
                        f"got {type(value).__name__}")
    if value.buffer.read_only:
        raise ValueError(f"{op}: {name} is read_only and cannot be updated")
    return value


def distinct(op: str, target: tuple[str, Tensor], *others: tuple[str, Tensor]) -> None:
    """Refuse a written operand that shares its buffer with an input (a shader may not bind
    one buffer as both, and the result would depend on the order of the writes)."""
    for name, other in others:
        if other.buffer is target[1].buffer:
            raise ValueError(f"{op}: {target[0]} is written and must not share memory with "
                             f"{name}; pass a separate tensor")


def check_size(op: str, *items: tuple[str, Tensor | tuple[tuple[int, ...], np.dtype]]) -> None:
    """Raise DeviceLimitError for an operand (a Tensor, or the (shape, dtype) of a result still
    to be allocated) larger than one storage binding: kernels bind operands whole."""
    device = next(t.device for _, t in items if isinstance(t, Tensor))
    limit = device.limits["max-storage-buffer-binding-size"]
    for name, item in items:
        if isinstance(item, Tensor):
            shape, dtype, nbytes = item.shape, item.dtype, item.buffer.nbytes
        else:
            shape, dtype = item
            nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        if nbytes > limit:
            raise DeviceLimitError("max-storage-buffer-binding-size", limit, nbytes,
                                   f"{op}: {name} {shape} {dtype}")
