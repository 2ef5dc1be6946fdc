"""Bitwise operators of integer Tensors (int32, uint32); kernels in
shaders/elementwise/bitwise.wgsl (broadcast binary ops) and unary_int.wgsl (invert).

Operands follow the arithmetic ops' rules (gpustd.elementwise): Python integers stay scalars
of the Tensor's dtype, host data takes it, two Tensors must share it. Comparisons give
uint32 0/1, gpustd's bool: `&`, `|` and `^` keep such masks 0/1 as numpy's bools stay bools,
but `~` is uint32's bitwise not (`mask ^ 1` or `logical_not` negate a mask). Floats raise
TypeError, as numpy's bitwise ufuncs do.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._broadcast import binary, prepare
from ._tensor import Tensor
from .elementwise import equal, not_equal
from .unary import _tensor, _unary_int

__all__ = ["bitwise_and", "bitwise_not", "bitwise_or", "bitwise_xor", "invert", "left_shift",
           "logical_and", "logical_not", "logical_or", "logical_xor", "right_shift"]

_OPS = {"bitwise_and": 0, "bitwise_or": 1, "bitwise_xor": 2, "left_shift": 3, "right_shift": 4}


def _refuse_floats(op: str, dtype: np.dtype) -> None:
    if dtype.kind not in "iu":
        raise TypeError(f"ufunc {op!r} not supported for {dtype} operands: bitwise operations "
                        "take int32 or uint32 (gpustd's bool is uint32); convert with "
                        ".astype(np.int32) first")


def _binary(op: str, a: Any, b: Any) -> Tensor:
    device, dtype, operands = prepare(a, b)
    _refuse_floats(op, dtype)
    return binary("elementwise/bitwise", device, dtype, operands, dtype, {}, {"OP": _OPS[op]})


def bitwise_and(a: Any, b: Any) -> Tensor:
    """a & b, broadcast (int32 or uint32). numpy: `np.bitwise_and`."""
    return _binary("bitwise_and", a, b)


def bitwise_or(a: Any, b: Any) -> Tensor:
    """a | b, broadcast (int32 or uint32). numpy: `np.bitwise_or`."""
    return _binary("bitwise_or", a, b)


def bitwise_xor(a: Any, b: Any) -> Tensor:
    """a ^ b, broadcast (int32 or uint32). numpy: `np.bitwise_xor`."""
    return _binary("bitwise_xor", a, b)


def left_shift(a: Any, b: Any) -> Tensor:
    """a << b, broadcast (int32 or uint32); bits shifted past the top are lost, and a count
    of 32 or more, or a negative one, gives 0, as numpy's. numpy: `np.left_shift`."""
    return _binary("left_shift", a, b)


def right_shift(a: Any, b: Any) -> Tensor:
    """a >> b, broadcast (int32 or uint32): arithmetic for int32; a count of 32 or more, or
    a negative one, gives 0 (-1 for a negative int32), as numpy's. numpy: `np.right_shift`."""
    return _binary("right_shift", a, b)


def invert(x: Any) -> Tensor:
    """~x, every bit flipped (int32 or uint32: ~mask of a uint32 0/1 mask is not a mask).
    numpy: `np.invert` (`np.bitwise_not`)."""
    x = _tensor(x)
    _refuse_floats("invert", x.dtype)
    return _unary_int("invert", x, 0, 0)


bitwise_not = invert


def _truth(x: Any) -> Any:
    """x != 0: on the GPU for a Tensor, on the host for host data (which the bitwise op then
    uploads beside the other operand)."""
    return not_equal(x, 0) if isinstance(x, Tensor) else np.asarray(x) != 0


def logical_not(x: Any) -> Tensor:
    """x == 0 elementwise as uint32 0/1 (NaN is true, so gives 0). numpy: `np.logical_not`."""
    return equal(x, 0)


def logical_and(a: Any, b: Any) -> Tensor:
    """a and b, each true where nonzero, broadcast; uint32 0/1. numpy: `np.logical_and`."""
    return bitwise_and(_truth(a), _truth(b))


def logical_or(a: Any, b: Any) -> Tensor:
    """a or b, each true where nonzero, broadcast; uint32 0/1. numpy: `np.logical_or`."""
    return bitwise_or(_truth(a), _truth(b))


def logical_xor(a: Any, b: Any) -> Tensor:
    """a xor b, each true where nonzero, broadcast; uint32 0/1. numpy: `np.logical_xor`."""
    return bitwise_xor(_truth(a), _truth(b))
