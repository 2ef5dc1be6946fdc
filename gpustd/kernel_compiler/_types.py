"""The type system of compiled kernels: WGSL scalar types, numpy-like promotion, literals.

Concrete types are the WGSL scalars f32, f16, i32, u32 and bool. Python numbers (literals,
global constants, scalar arguments) are *weak*, as in numpy's NEP 50: `int` and `float`
take the type of the concrete operand they meet (an `int` meeting f16 is f16, a `float`
meeting i32 is f32) and only default to i32 / f32 when nothing concrete decides.

Promotion of two concrete types follows numpy where numpy's result exists on GPUs, and maps
numpy's 64-bit results down as `Tensor.from_numpy` does: i32 with u32 gives i32 (numpy:
int64), an integer with f16 or f32 gives f32 (numpy: float64), f16 with f32 gives f32.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["CONCRETE", "DTYPE_OF", "FLOATS", "INTS", "WEAK", "Val", "concrete", "constant",
           "is_float", "is_int", "literal", "promote", "type_of_dtype", "weak"]

FLOATS = ("f16", "f32")
INTS = ("i32", "u32")
CONCRETE = ("bool", "i32", "u32", "f16", "f32")
WEAK = ("int", "float")
DTYPE_OF: dict[str, np.dtype] = {"f32": np.dtype(np.float32), "f16": np.dtype(np.float16),
            "i32": np.dtype(np.int32), "u32": np.dtype(np.uint32),
            "bool": np.dtype(np.uint32)}  # a bool result is stored as 0/1 uint32
_RANK = {"bool": 0, "u32": 1, "i32": 1, "f16": 2, "f32": 3}
_F16_MAX = 65504.0


def type_of_dtype(dtype: np.dtype) -> str | None:
    """The concrete type of a numpy dtype's values, None if a kernel cannot take it."""
    return {"f4": "f32", "f2": "f16", "i4": "i32", "u4": "u32", "b1": "bool"}.get(
        dtype.str[1:])


def concrete(t: str) -> str:
    """A weak type's default (int -> i32, float -> f32); concrete types are unchanged."""
    return {"int": "i32", "float": "f32"}.get(t, t)


def is_float(t: str) -> bool:
    return t in FLOATS or t == "float"


def is_int(t: str) -> bool:
    return t in INTS or t == "int"


def promote(a: str, b: str) -> str:
    """The common type of a binary operation's operands (see the module docstring)."""
    if a == b:
        return a
    if a in WEAK and b in WEAK:
        return "float"
    if a in WEAK or b in WEAK:
        weak, strong = (a, b) if a in WEAK else (b, a)
        if weak == "float" and not is_float(strong):
            return "f32"
        return strong
    if {a, b} == {"i32", "u32"}:
        return "i32"
    if is_float(a) != is_float(b) and "bool" not in (a, b):
        return "f32"
    return a if _RANK[a] > _RANK[b] else b


def _float_bits(value: float, t: str) -> str:
    if t == "f32":
        return f"f32_bits({struct.unpack('<I', struct.pack('<f', value))[0]:#x}u)"
    half = struct.unpack("<H", struct.pack("<e", value))[0]
    return f"f16_bits({half:#x}u)"


def literal(value: float | int | bool, t: str) -> str:
    """`value` written as a WGSL expression of concrete type `t`.

    Raises OverflowError for an integer that `t` cannot hold (numpy raises there too).
    Non-finite floats and floats past f16's range go through bit patterns: WGSL has no inf
    literal and rejects out-of-range constants at shader creation.
    """
    if t == "bool":
        return "true" if value else "false"
    if t in FLOATS:
        v = float(value)
        limit = _F16_MAX if t == "f16" else float(np.finfo(np.float32).max)
        if not math.isfinite(v) or abs(v) > limit:
            return _float_bits(v if not math.isfinite(v) else math.copysign(math.inf, v), t)
        suffix = "h" if t == "f16" else "f"
        text = repr(v)
        return f"({text}{suffix})" if text.startswith("-") else f"{text}{suffix}"
    if isinstance(value, float) and value != int(value):
        raise TypeError(f"{value!r} is not an integer, but the operation is {t}")
    v = int(value)
    lo, hi = (-(2**31), 2**31) if t == "i32" else (0, 2**32)
    if not lo <= v < hi:
        raise OverflowError(f"Python integer {v} is out of bounds for {t}")
    if t == "i32":
        return "bitcast<i32>(0x80000000u)" if v == lo else (f"({v}i)" if v < 0 else f"{v}i")
    return f"{v}u"


@dataclass(frozen=True)
class Val:
    """A translated expression: its type and its WGSL text.

    A weak value has no text of its own: `make(t)` writes it as concrete type `t` (a literal
    in f16 is written as an f16 literal, not converted from f32), so weak subexpressions are
    re-emitted wherever they are used.
    """

    type: str
    text: str = ""
    make: Callable[[str], str] | None = None
    value: float | int | bool | None = None  # the number, for a literal or a constant

    def as_(self, t: str) -> str:
        """This value converted to concrete type `t` (WGSL conversion constructors)."""
        if self.make is not None:
            return self.make(t)
        if t == self.type:
            return self.text
        if t == "bool":
            return f"({self.text} != {literal(0, self.type)})"
        return f"{t}({self.text})"

    def concrete(self) -> str:
        return self.as_(concrete(self.type))


def weak(t: str, build: Callable[[str], str], value: float | int | None = None) -> Val:
    """A weak value of type `t` ('int' or 'float') written by `build(concrete type)`.

    Truthiness (as bool) is taken from the value in its default type.
    """
    def make(target: str) -> str:
        if target == "bool":
            return Val(concrete(t), build(concrete(t))).as_("bool")
        return build(target)

    return Val(t, make=make, value=value)


def constant(value: float | int | bool) -> Val:
    """A Python number: bools are concrete, ints and floats weak."""
    if isinstance(value, bool):
        return Val("bool", literal(value, "bool"), value=value)
    t = "int" if isinstance(value, int) else "float"
    return weak(t, lambda target: literal(value, target), value)
