"""The functions a kernel may call: `math`, numpy ufuncs, builtins, casts and `where`.

Each is keyed by the Python object itself (so `from math import exp`, `math.exp` and
`np.exp` all work) and writes WGSL from its translated arguments. Float functions compute
in f32 (f16 arguments are widened and the result rounded back, as numpy does for float16);
integer arguments give f32 results (numpy: float64). floor/ceil/trunc/round/abs/sign keep
an integer type, like numpy's ufuncs (and unlike `math.floor`, which returns a Python int).
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from ._operators import binary_op
from ._types import WEAK, Val, is_float, promote, weak

__all__ = ["Context", "lookup"]


class Context(Protocol):
    def need(self, helper: str, t: str = "f32") -> str: ...
    def fail(self, construct: str, hint: str) -> Exception: ...


Emitter = Callable[["Context", list[Val]], Val]


def _float_fn(fmt: Callable[[Context, str], str], returns_bool: bool = False) -> Emitter:
    def emit(ctx: Context, args: list[Val]) -> Val:
        (a,) = _arity(ctx, args, 1)
        if returns_bool:
            return Val("bool", fmt(ctx, a.as_("f32")))
        if a.type in WEAK:
            return weak("float", lambda t: Val("f32", fmt(ctx, a.as_("f32"))).as_(t))
        text = fmt(ctx, a.as_("f32"))
        return Val("f16", f"f16({text})") if a.type == "f16" else Val("f32", text)
    return emit


def _builtin(name: str) -> Emitter:
    return _float_fn(lambda ctx, x: f"{name}({x})")


def _helper(name: str, returns_bool: bool = False) -> Emitter:
    return _float_fn(lambda ctx, x: f"{ctx.need(name)}({x})", returns_bool)


def _float_binary(fmt: Callable[[Context, str, str], str]) -> Emitter:
    def emit(ctx: Context, args: list[Val]) -> Val:
        a, b = _arity(ctx, args, 2)
        t = promote(_num(a.type), _num(b.type))
        if t in WEAK:
            return weak("float", lambda u: Val("f32", fmt(ctx, a.as_("f32"),
                                                          b.as_("f32"))).as_(u))
        text = fmt(ctx, a.as_("f32"), b.as_("f32"))
        return Val("f16", f"f16({text})") if t == "f16" else Val("f32", text)
    return emit


def _same_type(fmt: Callable[[str, str], str]) -> Emitter:
    """A unary function whose result has its argument's type (bool counts as i32)."""
    def emit(ctx: Context, args: list[Val]) -> Val:
        (a,) = _arity(ctx, args, 1)
        t = _num(a.type)
        if t in WEAK:
            return weak(t, lambda u: fmt(u, a.as_(u)))
        return Val(t, fmt(t, a.as_(t)))
    return emit


def _fold(fn: str) -> Emitter:
    """min / max of two or more values, promoted to one type."""
    def emit(ctx: Context, args: list[Val]) -> Val:
        if len(args) < 2:
            raise ctx.fail(f"{fn}() of {len(args)} argument(s)", "give two or more numbers")
        t = _num(args[0].type)
        for a in args[1:]:
            t = promote(t, _num(a.type))

        def build(u: str) -> str:
            text = args[0].as_(u)
            for a in args[1:]:
                text = f"{fn}({text}, {a.as_(u)})"
            return text
        return weak(t, build) if t in WEAK else Val(t, build(t))
    return emit


def _where(ctx: Context, args: list[Val]) -> Val:
    c, a, b = _arity(ctx, args, 3)
    return select(c, a, b)


def select(cond: Val, a: Val, b: Val) -> Val:
    """`a if cond else b` (both sides are evaluated; kernels have no side effects)."""
    t = promote(a.type, b.type)
    c = cond.as_("bool")

    def build(u: str) -> str:
        return f"select({b.as_(u)}, {a.as_(u)}, {c})"
    return weak(t, build) if t in WEAK else Val(t, build(t))


def _clip(ctx: Context, args: list[Val]) -> Val:
    x, lo, hi = _arity(ctx, args, 3)
    return _fold("min")(ctx, [_fold("max")(ctx, [x, lo]), hi])


def _cast(target: str) -> Emitter:
    def emit(ctx: Context, args: list[Val]) -> Val:
        (a,) = _arity(ctx, args, 1)
        return Val(target, a.as_(target))
    return emit


def _sign(u: str, x: str) -> str:
    if u == "u32":
        return f"select(0u, 1u, {x} > 0u)"
    return f"sign({x})"


def _abs(u: str, x: str) -> str:
    return x if u == "u32" else f"abs({x})"


def _rounding(name: str) -> Emitter:
    return _same_type(lambda u, x: f"{name}({x})" if is_float(u) else x)


def _power(ctx: Context, args: list[Val]) -> Val:
    a, b = _arity(ctx, args, 2)
    return binary_op(ctx, "Pow", a, b)


def _num(t: str) -> str:
    return "i32" if t == "bool" else t


def _arity(ctx: Context, args: list[Val], n: int) -> list[Val]:
    if len(args) != n:
        raise ctx.fail(f"call with {len(args)} argument(s)", f"this function takes {n}")
    return args


def _fmod(ctx: Context, x: str, y: str) -> str:
    return f"({x} % {y})"  # WGSL's float % truncates, as C's fmod does


_LOG10_2 = 0.30102999566398120


def _table() -> dict[int, tuple[str, Emitter]]:
    # gpustd's own functions work in kernels too; imported here, as the op modules they are
    # (not the gpustd package, which imports this one), when the first kernel is compiled.
    from .. import elementwise, unary

    pairs: list[tuple[list[Any], str, Emitter]] = [
        ([math.sqrt, np.sqrt, unary.sqrt], "sqrt", _builtin("sqrt")),
        ([math.exp, np.exp, unary.exp], "exp", _builtin("exp")),
        ([math.exp2, np.exp2], "exp2", _builtin("exp2")),
        ([math.log, np.log, unary.log], "log", _builtin("log")),
        ([math.log2, np.log2], "log2", _builtin("log2")),
        ([math.log10, np.log10], "log10",
         _float_fn(lambda ctx, x: f"(log2({x}) * {_LOG10_2!r}f)")),
        ([math.log1p, np.log1p], "log1p", _helper("log1p_f32")),
        ([math.expm1, np.expm1], "expm1", _helper("expm1_f32")),
        ([math.sin, np.sin], "sin", _builtin("sin")),
        ([math.cos, np.cos], "cos", _builtin("cos")),
        ([math.tan, np.tan], "tan", _helper("tan_f32")),
        ([math.asin, np.arcsin], "asin", _helper("asin_f32")),
        ([math.acos, np.arccos], "acos", _helper("acos_f32")),
        ([math.atan, np.arctan], "atan", _builtin("atan")),
        ([math.sinh, np.sinh], "sinh", _builtin("sinh")),
        ([math.cosh, np.cosh], "cosh", _builtin("cosh")),
        ([math.tanh, np.tanh, unary.tanh], "tanh", _helper("tanh_f32")),
        ([math.asinh, np.arcsinh], "asinh", _builtin("asinh")),
        ([math.acosh, np.arccosh], "acosh", _builtin("acosh")),
        ([math.atanh, np.arctanh], "atanh", _builtin("atanh")),
        ([math.degrees, np.degrees], "degrees", _builtin("degrees")),
        ([math.radians, np.radians], "radians", _builtin("radians")),
        ([math.erf], "erf", _helper("erf_f32")),
        ([math.erfc], "erfc", _helper("erfc_f32")),
        ([math.isnan, np.isnan], "isnan", _helper("isnan_f32", returns_bool=True)),
        ([math.isinf, np.isinf], "isinf", _helper("isinf_f32", returns_bool=True)),
        ([math.isfinite, np.isfinite], "isfinite",
         _helper("isfinite_f32", returns_bool=True)),
        ([math.fabs, np.fabs], "fabs", _builtin("abs")),
        ([math.atan2, np.arctan2], "atan2", _float_binary(lambda ctx, y, x: f"atan2({y}, {x})")),
        ([math.pow], "pow",
         _float_binary(lambda ctx, x, y: f"{ctx.need('float_power')}({x}, {y})")),
        ([math.hypot, np.hypot], "hypot",
         _float_binary(lambda ctx, x, y: f"{ctx.need('hypot_f32')}({x}, {y})")),
        ([math.copysign, np.copysign], "copysign",
         _float_binary(lambda ctx, x, y: f"{ctx.need('copysign_f32')}({x}, {y})")),
        ([math.fmod, np.fmod], "fmod", _float_binary(_fmod)),
        ([builtins.abs, np.abs, unary.abs], "abs", _same_type(_abs)),
        ([np.sign], "sign", _same_type(_sign)),
        ([math.floor, np.floor], "floor", _rounding("floor")),
        ([math.ceil, np.ceil], "ceil", _rounding("ceil")),
        ([math.trunc, np.trunc], "trunc", _rounding("trunc")),
        ([builtins.round, np.rint], "round", _rounding("round")),  # half to even, as Python
        ([builtins.min, np.minimum, elementwise.minimum], "min", _fold("min")),
        ([builtins.max, np.maximum, elementwise.maximum], "max", _fold("max")),
        ([np.power, elementwise.power], "power", _power),
        ([np.where, elementwise.where], "where", _where),
        ([np.clip, unary.clip], "clip", _clip),
        ([builtins.float, np.float32], "float32", _cast("f32")),
        ([np.float16], "float16", _cast("f16")),
        ([builtins.int, np.int32], "int32", _cast("i32")),
        ([np.uint32], "uint32", _cast("u32")),
        ([builtins.bool, np.bool_], "bool", _cast("bool")),
    ]
    return {id(obj): (name, emit) for objs, name, emit in pairs for obj in objs}


_TABLE: dict[int, tuple[str, Emitter]] = {}


def lookup(fn: Any) -> tuple[str, Emitter] | None:
    """(name, emitter) for a callable a kernel may use, None if it is not one of them."""
    if not _TABLE:
        _TABLE.update(_table())
    return _TABLE.get(id(fn))


def supported_names() -> list[str]:
    """The functions' names, for error messages and documentation."""
    if not _TABLE:
        _TABLE.update(_table())
    return sorted({name for name, _ in _TABLE.values()})

