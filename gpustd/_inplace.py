"""numpy's in-place operators (`x += y`, ...) and ufuncs' `out=`: the result written into the
target's own buffer, so every Tensor sharing that buffer (a reshape, a squeeze) sees it.

The result is computed as the operator would, then copied over the target (a kernel cannot
read and write one buffer through two bindings). As numpy, the result must have the target's
shape (the other operand only broadcasts to it) and convert to its dtype under 'same_kind'
casting: an int32 tensor cannot take `+= 0.5` or `/= 2`, a float16 one takes `+= float32`.

The operation runs in the dtype numpy's would (a float16 += float32 adds in float32, then
rounds), narrowed to the GPU's types (float64 to float32, int64 to int32: an int32 tensor
meeting uint32 operands computes in int32, exact for + - * and the bitwise operators).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._broadcast import gpu_dtype
from ._tensor import OPERATORS, Tensor, asarray

__all__ = ["check_writable", "inplace", "store"]


def check_writable(x: Tensor) -> None:
    """ValueError, as numpy's, where x's buffer is read-only (weights, constants)."""
    if x.buffer.read_only:
        raise ValueError("assignment destination is read-only (its buffer was made with "
                         "read_only=True); write into a copy: x.astype(x.dtype)")


def store(target: Tensor, result: Any, op: str) -> Tensor:
    """Copy `result` (a Tensor, or host data from numpy's fallback) into `target`'s buffer;
    `op` names the operation in errors."""
    check_writable(target)
    dtype = result.dtype if isinstance(result, Tensor) else np.asarray(result).dtype
    _check_same_kind(op, dtype, target.dtype)
    shape = result.shape if isinstance(result, Tensor) else np.shape(result)
    if tuple(shape) != target.shape:
        raise ValueError(f"non-broadcastable output operand with shape {target.shape} doesn't "
                         f"match the broadcast shape {tuple(shape)}")
    if not isinstance(result, Tensor):
        result = asarray(np.asarray(result, dtype=target.dtype), device=target.device)
    elif result.dtype != target.dtype:
        result = result.astype(target.dtype)
    if result.buffer is not target.buffer:
        target.buffer.copy_from(result.buffer)
    return target


def _check_same_kind(op: str, result: np.dtype, target: np.dtype) -> None:
    if result != target and not np.can_cast(result, target, "same_kind"):
        raise TypeError(f"Cannot cast ufunc {op!r} output from dtype('{result}') to "
                        f"dtype('{target}') with casting rule 'same_kind'; compute into a new "
                        "tensor (x = x + y) or convert x first")


def _numpy_dtype(value: Any) -> Any:
    """What numpy's type resolution sees of an operand: a dtype, or the Python type of a
    number (a "weak" scalar, NEP 50)."""
    if isinstance(value, Tensor):
        return value.dtype
    if isinstance(value, (bool, int, float)):
        return int if isinstance(value, bool) else type(value)
    return np.asarray(value).dtype


def inplace(x: Tensor, op: str, other: Any) -> Tensor:
    """`x op= other` (op: an operator table name such as "add", also numpy's ufunc name)
    into x's own buffer, computed in numpy's dtype for the pair and cast back under
    'same_kind' (TypeError with numpy's message where numpy raises)."""
    check_writable(x)
    theirs = _numpy_dtype(other)
    try:
        loop = getattr(np, op).resolve_dtypes((x.dtype, theirs, None))[-1]
    except TypeError:  # no numpy loop (bitwise on floats): the operator says why
        loop = None
    if loop is not None:
        _check_same_kind(op, loop, x.dtype)
    if isinstance(theirs, np.dtype) and theirs != x.dtype:
        # numpy's common dtype, not x's: a float16 += float32 adds in float32
        common = gpu_dtype(np.result_type(x.dtype, theirs))
        if isinstance(other, Tensor) and other.dtype != common:
            other = other.astype(common)
        return store(x, OPERATORS[op](x if x.dtype == common else x.astype(common), other), op)
    return store(x, OPERATORS[op](x, other), op)
