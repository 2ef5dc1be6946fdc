"""numpy's in-place operators (`x += y`, ...) and ufuncs' `out=`: the result written into the
target's own buffer, so every Tensor sharing that buffer (a reshape, a squeeze) sees it.

The result is computed as the operator would, then copied over the target (a kernel cannot
read and write one buffer through two bindings). As numpy, the result must have the target's
shape (the other operand only broadcasts to it) and convert to its dtype under 'same_kind'
casting: an int32 tensor cannot take `+= 0.5` or `/= 2`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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
    if dtype != target.dtype and not np.can_cast(dtype, target.dtype, "same_kind"):
        raise TypeError(f"Cannot cast ufunc {op!r} output from dtype('{dtype}') to "
                        f"dtype('{target.dtype}') with casting rule 'same_kind'; compute into "
                        "a new tensor (x = x + y) or convert x first")
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


def inplace(x: Tensor, op: str, other: Any) -> Tensor:
    """`x op= other` (op: an operator table name such as "add") into x's own buffer."""
    check_writable(x)
    return store(x, OPERATORS[op](x, other), op)
