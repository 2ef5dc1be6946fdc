"""Arithmetic, bitwise and power operators on translated values, with numpy's promotion."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

from ._types import WEAK, Val, constant, is_float, promote, weak

__all__ = ["binary_op", "typed"]

_SYMBOL = {"Add": "+", "Sub": "-", "Mult": "*", "Div": "/", "BitAnd": "&", "BitOr": "|",
           "BitXor": "^", "LShift": "<<", "RShift": ">>"}
# Python numbers meeting Python numbers are computed in Python, as they would be: 2 ** 40
# stays exact (and out of range for int32, which numpy reports too) instead of wrapping.
_FOLD = {"Add": operator.add, "Sub": operator.sub, "Mult": operator.mul,
         "Div": operator.truediv, "FloorDiv": operator.floordiv, "Mod": operator.mod,
         "Pow": operator.pow}


def typed(t: str, build: Callable[[str], str], ints_only: bool = False) -> Val:
    """A value of type `t` written by `build(type)`; a weak one materialized as a float
    for an integer-only operator is computed in i32 and converted."""
    if t in WEAK:
        def make(u: str) -> str:
            if ints_only and is_float(u):
                return Val("i32", build("i32")).as_(u)
            return build(u)
        return weak(t, make)
    return Val(t, build(t))


def binary_op(ctx: Any, op: str, a: Val, b: Val) -> Val:
    """`a op b` with numpy's promotion (see _types); ops by their ast class name."""
    if op in ("BitAnd", "BitOr", "BitXor", "LShift", "RShift"):
        t = promote(a.type, b.type)
        if is_float(t):
            raise ctx.fail(f"{_SYMBOL[op]} on {a.type} and {b.type}",
                           "bitwise operators need integers or bools")
        if t == "bool":
            if op in ("LShift", "RShift"):
                t = "i32"
            else:
                symbol = "!=" if op == "BitXor" else _SYMBOL[op]
                return Val("bool", f"({a.as_('bool')} {symbol} {b.as_('bool')})")
        if op in ("LShift", "RShift"):
            return typed(t, lambda u: f"({a.as_(u)} {_SYMBOL[op]} u32({b.as_(u)}))", True)
        return typed(t, lambda u: f"({a.as_(u)} {_SYMBOL[op]} {b.as_(u)})", True)
    num_a = "i32" if a.type == "bool" else a.type
    num_b = "i32" if b.type == "bool" else b.type
    t = promote(num_a, num_b)
    if (a.value is not None and b.value is not None and op in _FOLD and t in WEAK
            and b.value != 0 and (op != "Pow" or abs(b.value) <= 64)):
        return constant(_FOLD[op](a.value, b.value))
    if op == "Div" and not is_float(t):
        t = "float" if t == "int" else "f32"
    if op == "Pow" and b.value is not None and a.type not in WEAK:
        if b.value == 2 and a.type != "bool":
            x = ctx.let(Val(a.type, a.text))
            return Val(t, f"({x.as_(t)} * {x.as_(t)})")
        if b.value == 0.5 and is_float(t):
            return Val(t, f"sqrt({a.as_(t)})")
    if op == "Div" and is_float(t) and b.value is not None and b.value != 0 \
            and math.isfinite(b.value):  # a finite nonzero constant divisor: a plain divide
        return typed(t, lambda u: f"({a.as_(u)} / {b.as_(u)})")
    return typed(t, lambda u: _arith(ctx, op, u, a.as_(u), b.as_(u)))


def _arith(ctx: Any, op: str, t: str, x: str, y: str) -> str:
    if op in ("Add", "Sub", "Mult") or (op == "Div" and not is_float(t)):
        return f"({x} {_SYMBOL[op]} {y})"
    if is_float(t):
        if op == "FloorDiv":
            return f"floor({x} / {y})"
        name = {"Div": "float_divide", "Mod": "float_mod", "Pow": "float_power"}[op]
        text = f"{ctx.need(name)}({_f32(t, x)}, {_f32(t, y)})"
        return f"f16({text})" if t == "f16" else text
    name = {"FloorDiv": "floordiv", "Mod": "mod", "Pow": "int_power"}[op]
    return f"{ctx.need(name, t)}({x}, {y})"


def _f32(t: str, x: str) -> str:
    return f"f32({x})" if t == "f16" else x
