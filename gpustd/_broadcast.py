"""Operand handling shared by the elementwise ops: dtype rules, broadcasting, stride plans.

Tensors decide the device and the dtype; host arrays are copied over in that dtype, and
Python scalars stay on the host and travel to the kernel as params (numpy's "weak scalar"
rule, NEP 50). Broadcast shapes are computed here and collapsed into at most `MAX_RANK`
dimensions, each with one element stride per operand (0 where the operand is broadcast).
"""

from __future__ import annotations

import functools
import numbers
import struct
from typing import Any

import numpy as np

from gpucore import Device, Kernel, default_device, wgsl_scalar

from ._tensor import Tensor

__all__ = ["MAX_RANK", "Operand", "binary", "broadcast_shapes", "cached_kernel", "compute_type",
           "ensure_tensor", "gpu_dtype", "plan", "prepare", "scalar_bits", "shape_of",
           "stride_params", "upload"]

MAX_RANK = 6  # dimensions a kernel indexes after collapsing (fields d0..d5 of its params)

_HOST_DTYPES = {np.dtype(np.float64): np.dtype(np.float32), np.dtype(np.int64): np.dtype(np.int32),
                np.dtype(np.uint64): np.dtype(np.uint32), np.dtype(np.bool_): np.dtype(np.uint32),
                np.dtype(np.int8): np.dtype(np.int32), np.dtype(np.int16): np.dtype(np.int32),
                np.dtype(np.uint8): np.dtype(np.uint32), np.dtype(np.uint16): np.dtype(np.uint32)}

Operand = Tensor | int | float  # a prepared operand: a Tensor, or a Python scalar


def gpu_dtype(dtype: Any) -> np.dtype:
    """The dtype gpustd keeps host data of `dtype` in: float64 as float32, int64 as int32,
    bool as uint32 (gpustd's bool), ...; the GPU's own types unchanged."""
    dtype = np.dtype(dtype)
    return _HOST_DTYPES.get(dtype, dtype)


def cached_kernel(shader: str, types: dict[str, str], constants: dict[str, Any],
                  parts: tuple[str, ...] = ()) -> Kernel:
    """The Kernel for `shader` specialized by `types` and `constants`, built once."""
    return Kernel.cached(shader, types=types, constants=constants, parts=parts)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (numbers.Number, np.generic)) and not isinstance(value, complex)


def _result_dtype(tensors: list[Tensor], others: list[Any]) -> np.dtype:
    if tensors:
        dtypes = {t.dtype for t in tensors}
        if len(dtypes) > 1:
            names = " and ".join(sorted(str(d) for d in dtypes))
            raise TypeError(f"dtype mismatch: operands are {names}; convert one with "
                            ".astype(...) so both have the same dtype")
        dtype = dtypes.pop()
        if dtype.kind not in "fiu":
            raise TypeError(f"{dtype} tensors are not supported here; use float32, "
                            "float16, int32 or uint32")
        # An integer tensor meeting float data is promoted, as numpy would.
        if dtype.kind in "iu" and any(np.asarray(o).dtype.kind == "f" for o in others):
            return np.dtype(np.float32)
        return dtype
    # Host data only: numpy's promotion, Python numbers weak (NEP 50, whatever numpy runs):
    # they only lift integer data to float (np.arange(5) * 0.5) or bools to integers.
    weak = [o for o in others if isinstance(o, (int, float))]
    strong = [np.asarray(o) for o in others if not isinstance(o, (int, float))]
    host = np.result_type(*strong) if strong else np.result_type(*weak)
    if host.kind in "biu" and any(isinstance(w, float) for w in weak):
        host = np.dtype(np.float64)
    elif host.kind == "b" and any(not isinstance(w, bool) for w in weak):
        host = np.dtype(np.int64)
    return _HOST_DTYPES.get(host, host)


def prepare(*values: Any, device: Device | None = None,
            dtype: Any = None) -> tuple[Device, np.dtype, list[Operand]]:
    """Tensors stay, host arrays become Tensors, scalars stay Python numbers.

    Returns the common device, the common dtype, and the operands in that dtype.
    """
    tensors = [v for v in values if isinstance(v, Tensor)]
    others = [v for v in values if not isinstance(v, Tensor)]
    devices = {id(t.device): t.device for t in tensors}
    if len(devices) > 1:
        raise ValueError("operands are on different devices; move one with .to(device)")
    device = next(iter(devices.values()), None) or device or default_device()
    result = np.dtype(dtype) if dtype is not None else _result_dtype(tensors, others)
    prepared: list[Operand] = []
    for v in values:
        if isinstance(v, Tensor):
            prepared.append(v if v.dtype == result else v.astype(result))
        elif _is_scalar(v):
            prepared.append(v.item() if isinstance(v, np.generic) else v)
        else:
            array = np.asarray(v)
            if array.dtype.kind not in "biuf":
                raise TypeError(f"cannot use {array.dtype} data as an operand; "
                                "pass numbers (float32, float16, int32 or uint32)")
            prepared.append(upload(array, result, device))
    return device, result, prepared


def upload(data: Any, dtype: Any, device: Device | None) -> Tensor:
    """`Tensor.from_numpy`, keeping the shape of 0-d data (it returns shape (1,) there)."""
    array = np.asarray(data)
    return Tensor.from_numpy(array, dtype=dtype, device=device).reshape(array.shape)


def scalar_bits(value: float, compute: str) -> int:
    """The u32 bit pattern of `value` as the WGSL scalar type `compute` (f32, i32, u32)."""
    if compute == "f32":
        return struct.unpack("<I", struct.pack("<f", float(value)))[0]
    if float(value) != int(value):
        raise TypeError(f"{value!r} is not an integer, but the operands are {compute}")
    lo, hi = (-(2**31), 2**31) if compute == "i32" else (0, 2**32)
    if not lo <= int(value) < hi:
        raise OverflowError(f"Python integer {value} is out of bounds for {compute}")
    return int(value) & 0xFFFFFFFF


def shape_of(value: Operand) -> tuple[int, ...]:
    return value.shape if isinstance(value, Tensor) else ()


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """numpy's broadcasting rule; ValueError naming every shape when they do not fit."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(rank):
        sizes = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0}
        sizes.discard(1)
        if len(sizes) > 1:
            listed = " and ".join(str(tuple(s)) for s in shapes)
            raise ValueError(f"shapes {listed} cannot be broadcast together (axis {axis} "
                             f"of the result would need sizes {sorted(sizes)}); reshape one "
                             "so each dimension matches or is 1")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def plan(out_shape: tuple[int, ...],
         shapes: list[tuple[int, ...]]) -> tuple[list[int], list[list[int]]]:
    """Collapse a broadcast into dims (innermost first) and per-operand element strides.

    Adjacent dimensions merge when every operand walks them as one (contiguous, or
    broadcast across both), so same-shape operands always give a single dimension.
    """
    rank = len(out_shape)
    strides = []
    for shape in shapes:
        padded = (1,) * (rank - len(shape)) + tuple(shape)
        row, step = [], 1
        for size, full in zip(reversed(padded), reversed(out_shape)):
            row.append(step if size == full and size != 1 else 0)
            step *= size
        strides.append(row)
    dims: list[int] = []
    merged: list[list[int]] = [[] for _ in shapes]
    for axis, size in enumerate(reversed(out_shape)):
        if size == 1:
            continue
        if dims and all(s[axis] == m[-1] * dims[-1] for s, m in zip(strides, merged)):
            dims[-1] *= size
            continue
        dims.append(size)
        for s, m in zip(strides, merged):
            m.append(s[axis])
    if not dims:
        dims, merged = [1], [[0] for _ in shapes]
    if len(dims) > MAX_RANK:
        raise ValueError(f"broadcasting {' and '.join(map(str, shapes))} needs {len(dims)} "
                         f"independent dimensions; at most {MAX_RANK} are supported "
                         "(make operands contiguous with matching shapes first)")
    return dims, merged


def stride_params(dims: list[int], strides: list[list[int]], names: str) -> dict[str, Any]:
    """params fields d0..d4 and <name>0..<name>5 for each operand name in `names`."""
    dims = dims + [1] * (MAX_RANK - len(dims))
    fields = {f"d{k}": dims[k] for k in range(MAX_RANK - 1)}
    for name, row in zip(names, strides):
        row = row + [0] * (MAX_RANK - len(row))
        fields.update({f"{name}{k}": row[k] for k in range(MAX_RANK)})
    return fields


def compute_type(dtype: np.dtype) -> str:
    """The WGSL type a kernel computes `dtype` in (and a scalar operand's bits are): f32 for
    float16 storage too."""
    return "f32" if dtype.kind == "f" else wgsl_scalar(dtype)


def ensure_tensor(operands: list[Operand], dtype: np.dtype, device: Device) -> list[Operand]:
    """`operands` with at least one Tensor: an all-scalar call still needs a buffer to bind,
    so its first scalar is uploaded."""
    if not any(isinstance(v, Tensor) for v in operands):
        operands = list(operands)
        operands[0] = upload(operands[0], dtype, device)
    return operands


@functools.lru_cache(maxsize=1024)  # pure; every eager elementwise op asks it
def _binary_layout(a: tuple[int, ...], b: tuple[int, ...]
                   ) -> tuple[tuple[int, ...], int, dict[str, Any]]:
    """(result shape, collapsed rank, stride params) of a broadcast of shapes a and b (the
    params dict is shared: read it, never change it)."""
    shape = broadcast_shapes(a, b)
    dims, strides = plan(shape, [a, b])
    return shape, len(dims), stride_params(dims, strides, "ab")


def binary(shader: str, device: Device, dtype: np.dtype, operands: list[Operand],
           out_dtype: np.dtype, types: dict[str, str], constants: dict[str, Any]) -> Tensor:
    """out = f(x, y) of a broadcast binary kernel (one whose `//! parts:` line names
    elementwise/binary_operands) over two prepared operands of `dtype`; `types` and
    `constants` specialize it beyond what every such kernel takes."""
    x, y = ensure_tensor(operands, dtype, device)
    shape, rank, fields = _binary_layout(shape_of(x), shape_of(y))
    out = Tensor.empty(shape, out_dtype, device=device)
    if out.size == 0:
        return out
    compute = compute_type(dtype)
    bits = [0 if isinstance(v, Tensor) else scalar_bits(v, compute) for v in (x, y)]
    kernel = cached_kernel(
        shader, {"T": wgsl_scalar(dtype), "Out": wgsl_scalar(out_dtype), **types},
        {"RANK": rank, "A_PARAM": not isinstance(x, Tensor),
         "B_PARAM": not isinstance(y, Tensor), **constants},
        parts=("elementwise/binary_operands",))
    placeholder = x if isinstance(x, Tensor) else y  # a scalar's binding: bound, never read
    kernel.dispatch(
        kernel.groups_for(out.size),
        x if isinstance(x, Tensor) else placeholder,
        y if isinstance(y, Tensor) else placeholder,
        out,
        n=out.size, a_bits=bits[0], b_bits=bits[1], **fields,
    )
    return out
