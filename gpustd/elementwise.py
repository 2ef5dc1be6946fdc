"""Broadcasting binary arithmetic, comparisons and `where`; kernels in shaders/elementwise/.

Operands are Tensors, anything `np.asarray` takes (copied to the device in the Tensors'
dtype), or Python scalars (passed to the kernel as parameters, never uploaded). Shapes
broadcast as in numpy. Two Tensors of different dtypes raise TypeError: convert first.
Comparisons give gpustd's bool: uint32 0/1 (a Tensor has no bool dtype).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import wgsl_scalar

from ._broadcast import (
    binary,
    broadcast_shapes,
    cached_kernel,
    compute_type,
    ensure_tensor,
    plan,
    prepare,
    scalar_bits,
    shape_of,
    stride_params,
    upload,
)
from ._tensor import Tensor

__all__ = ["add", "divide", "divmod", "equal", "floor_divide", "greater", "greater_equal",
           "less", "less_equal", "maximum", "minimum", "mod", "multiply", "not_equal", "power",
           "remainder", "subtract", "where"]

_OPS = {"add": 0, "subtract": 1, "multiply": 2, "divide": 3, "power": 4, "maximum": 5,
        "minimum": 6, "equal": 7, "not_equal": 8, "less": 9, "less_equal": 10, "greater": 11,
        "greater_equal": 12, "floor_divide": 13, "remainder": 14}
_COMPARISONS = frozenset(op for op, code in _OPS.items() if 7 <= code <= 12)


def _binary(op: str, a: Any, b: Any) -> Tensor:
    device, dtype, operands = prepare(a, b)
    if op == "divide" and dtype.kind in "iu":
        # numpy's true division of integers is floating point.
        device, dtype, operands = prepare(*operands, dtype=np.float32)
    out_dtype = np.dtype(np.uint32) if op in _COMPARISONS else dtype
    return binary("elementwise/binary", device, dtype, operands, out_dtype,
                  {"C": compute_type(dtype)}, {"OP": _OPS[op], "IS_FLOAT": dtype.kind == "f"})


def add(a: Any, b: Any) -> Tensor:
    """a + b, broadcast. Any dtype (integers wrap). numpy: `np.add`."""
    return _binary("add", a, b)


def subtract(a: Any, b: Any) -> Tensor:
    """a - b, broadcast. Any dtype (integers wrap). numpy: `np.subtract`."""
    return _binary("subtract", a, b)


def multiply(a: Any, b: Any) -> Tensor:
    """a * b, broadcast. Any dtype (integers wrap). numpy: `np.multiply`."""
    return _binary("multiply", a, b)


def divide(a: Any, b: Any) -> Tensor:
    """a / b, broadcast (true division: integer operands give float32). numpy: `np.divide`."""
    return _binary("divide", a, b)


def power(a: Any, b: Any) -> Tensor:
    """a ** b, broadcast. numpy: `np.power`.

    Floats follow numpy for x**0 == 1**y == 1, NaN operands, 0**y and negative bases with
    integral exponents (NaN otherwise). Integers use exact repeated squaring; a negative
    integer exponent gives 0 (or +-1 for a base of +-1) where numpy would raise.
    """
    return _binary("power", a, b)


def floor_divide(a: Any, b: Any) -> Tensor:
    """a // b, broadcast: the quotient rounded toward -inf. numpy: `np.floor_divide`.

    Integers as numpy's: x // 0 is 0 (where numpy also warns), MIN // -1 wraps to MIN.
    Floats as numpy's npy_divmod (float16 computed in float32): x // 0 is +-inf (0 // 0 and
    anything with inf or NaN in x NaN); the quotient is x - remainder(x, y) over y, snapped
    to an integer, so the two always agree (the remainder comes from an exact fmod, done in
    integers: WGSL has none).
    """
    return _binary("floor_divide", a, b)


def remainder(a: Any, b: Any) -> Tensor:
    """a % b, broadcast: a - floor_divide(a, b) * b, signed like b. numpy: `np.remainder`
    (`np.mod`).

    Integers: x % 0 is 0, as numpy gives (and warns). Floats: x % 0 and inf % y are NaN,
    x % +-inf is x, or +-inf where the signs of x and y differ; see `floor_divide` on
    exactness.
    """
    return _binary("remainder", a, b)


mod = remainder


def divmod(a: Any, b: Any) -> tuple[Tensor, Tensor]:
    """(floor_divide(a, b), remainder(a, b)). numpy: `np.divmod`."""
    return _binary("floor_divide", a, b), _binary("remainder", a, b)


def maximum(a: Any, b: Any) -> Tensor:
    """Elementwise larger of a and b, broadcast; NaN where either is NaN. numpy: `np.maximum`."""
    return _binary("maximum", a, b)


def minimum(a: Any, b: Any) -> Tensor:
    """Elementwise smaller of a and b, broadcast; NaN where either is NaN. numpy: `np.minimum`."""
    return _binary("minimum", a, b)


def equal(a: Any, b: Any) -> Tensor:
    """a == b, broadcast; uint32 0/1 (NaN equals nothing). numpy: `np.equal`."""
    return _binary("equal", a, b)


def not_equal(a: Any, b: Any) -> Tensor:
    """a != b, broadcast; uint32 0/1 (NaN differs from everything). numpy: `np.not_equal`."""
    return _binary("not_equal", a, b)


def less(a: Any, b: Any) -> Tensor:
    """a < b, broadcast; uint32 0/1 (false where either is NaN). numpy: `np.less`."""
    return _binary("less", a, b)


def less_equal(a: Any, b: Any) -> Tensor:
    """a <= b, broadcast; uint32 0/1 (false where either is NaN). numpy: `np.less_equal`."""
    return _binary("less_equal", a, b)


def greater(a: Any, b: Any) -> Tensor:
    """a > b, broadcast; uint32 0/1 (false where either is NaN). numpy: `np.greater`."""
    return _binary("greater", a, b)


def greater_equal(a: Any, b: Any) -> Tensor:
    """a >= b, broadcast; uint32 0/1 (false where either is NaN). numpy: `np.greater_equal`."""
    return _binary("greater_equal", a, b)


def where(condition: Any, a: Any, b: Any) -> Tensor:
    """a where `condition` is nonzero (NaN included), else b; all three broadcast.
    numpy: `np.where`.

    `condition` may be a Tensor of any dtype or host data (bools become uint32); a and b
    follow the rules of the arithmetic ops (same dtype when both are Tensors).
    """
    on = condition.device if isinstance(condition, Tensor) else None
    device, dtype, operands = prepare(a, b, device=on)
    if on is not None and on is not device:
        raise ValueError("condition is on a different device from a and b; move it "
                         "with .to(device)")
    operands = ensure_tensor(operands, dtype, device)
    cond = condition if on is not None else upload(condition, None, device)
    if cond.dtype.kind not in "fiu":
        raise TypeError(f"a {cond.dtype} condition is not supported; use a bool, float or "
                        "integer condition")
    if cond.dtype == np.float16:  # the kernel reads a float condition's bits as one u32
        cond = cond.astype(np.float32)
    x, y = operands
    shape = broadcast_shapes(cond.shape, shape_of(x), shape_of(y))
    compute = compute_type(dtype)
    bits = [0 if isinstance(v, Tensor) else scalar_bits(v, compute) for v in operands]
    out = Tensor.empty(shape, dtype, device=device)
    if out.size == 0:
        return out
    dims, strides = plan(shape, [shape_of(x), shape_of(y), cond.shape])
    kernel = cached_kernel(
        "elementwise/where",
        {"T": wgsl_scalar(dtype), "C": compute, "Cond": wgsl_scalar(cond.dtype)},
        {"RANK": len(dims), "COND_FLOAT": cond.dtype.kind == "f",
         "A_PARAM": not isinstance(x, Tensor), "B_PARAM": not isinstance(y, Tensor)},
    )
    # A scalar's binding is a placeholder: any buffer of the right type, never read.
    placeholder = next(v for v in operands if isinstance(v, Tensor))
    kernel.dispatch(
        kernel.groups_for(out.size),
        cond,
        x if isinstance(x, Tensor) else placeholder,
        y if isinstance(y, Tensor) else placeholder,
        out,
        n=out.size, a_bits=bits[0], b_bits=bits[1], **stride_params(dims, strides, "abc"),
    )
    return out
