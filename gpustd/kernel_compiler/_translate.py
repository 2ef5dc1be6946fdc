"""Python AST -> WGSL statements, one typed expression at a time.

A kernel body is a sequence of assignments ending in `return`; each assignment of a
concrete value becomes a WGSL `let`, a weak one (Python numbers only) is kept as an
expression and written in whatever type its uses need. Calls to other Python functions
(plain or decorated kernels) are inlined under the same rules.
"""

from __future__ import annotations

import ast
import builtins
import itertools
import types
from typing import Any

import numpy as np

from . import _calls
from ._helpers import dependencies, helper_source
from ._operators import binary_op, typed
from ._source import KernelSource, parse_function
from ._types import WEAK, Val, constant, is_float, literal, promote, type_of_dtype

__all__ = ["Translation", "translate"]

_MAX_INLINE_DEPTH = 16
_BINOPS = {ast.Add: "Add", ast.Sub: "Sub", ast.Mult: "Mult", ast.Div: "Div",
           ast.FloorDiv: "FloorDiv", ast.Mod: "Mod", ast.Pow: "Pow", ast.BitAnd: "BitAnd",
           ast.BitOr: "BitOr", ast.BitXor: "BitXor", ast.LShift: "LShift",
           ast.RShift: "RShift"}
_COMPARE = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==",
            ast.NotEq: "!="}


class Translation:
    """The WGSL a function became: `lines` (let statements), its outputs and helpers."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.helpers: dict[str, str] = {}
        self.names = itertools.count()
        self.source: KernelSource | None = None
        self.node: ast.AST | None = None  # the node being translated, for errors
        self.depth = 0

    # -- the Context protocol of _calls ----------------------------------------------
    def need(self, helper: str, t: str = "f32") -> str:
        for dep in dependencies(helper):
            self.need(dep, t)
        name, text = helper_source(helper, t)
        self.helpers.setdefault(name, text)
        return name

    def fail(self, construct: str, hint: str) -> Exception:
        assert self.source is not None and self.node is not None
        return self.source.error(self.node, construct, hint)

    def let(self, val: Val, name: str = "t") -> Val:
        """`val` held in a WGSL `let` (so it can be used twice without being recomputed)."""
        if val.type in WEAK or val.text.isidentifier():
            return val
        # WGSL reserves names starting with two underscores; the counter keeps names apart
        stem = name.lstrip("_") if name.isascii() and name.isidentifier() else ""
        var = f"{stem or 'v'}_{next(self.names)}"
        self.lines.append(f"let {var} = {val.text};")
        return Val(val.type, var)


def translate(source: KernelSource, args: list[Val], out: Translation) -> list[Val]:
    """Translate `source` called with `args`; its statements go to `out.lines`."""
    return _Function(source, out).run(args)


class _Function:
    def __init__(self, source: KernelSource, out: Translation) -> None:
        self.src = source
        self.out = out
        self.env: dict[str, Val] = {}

    def fail(self, node: ast.AST, construct: str, hint: str) -> Exception:
        return self.src.error(node, construct, hint)

    def run(self, args: list[Val]) -> list[Val]:
        params = self.src.params
        if len(args) != len(params):
            raise TypeError(f"kernel '{self.src.name}' takes {len(params)} arguments "
                            f"({', '.join(params)}), got {len(args)}")
        self.env = dict(zip(params, args))
        node = self.src.node
        if isinstance(node, ast.Lambda):
            return self.results(node.body)
        body = [s for k, s in enumerate(node.body)
                if not (k == 0 and isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
        for k, stmt in enumerate(body):
            if isinstance(stmt, ast.Return):
                if k != len(body) - 1:
                    raise self.fail(body[k + 1], "code after return", "return last")
                if stmt.value is None:
                    raise self.fail(stmt, "return without a value", "return the result(s)")
                return self.results(stmt.value)
            self.statement(stmt)
        raise self.fail(node, "no return", "a kernel must end with `return value` or "
                        "`return a, b` for several outputs")

    def results(self, node: ast.expr) -> list[Val]:
        items = node.elts if isinstance(node, ast.Tuple) else [node]
        return [self.expr(e) for e in items]

    # -- statements ------------------------------------------------------------------
    def statement(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, ast.Pass):
            return
        if isinstance(stmt, ast.Assign):
            value = stmt.value
            for target in stmt.targets:
                self.assign(target, value)
            return
        if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
            load = ast.Name(stmt.target.id, ast.Load(), lineno=stmt.lineno)
            op = ast.BinOp(load, stmt.op, stmt.value, lineno=stmt.lineno)
            self.bind(stmt.target.id, self.expr(op))
            return
        raise self.fail(stmt, f"statement {self.src.describe(stmt)}",
                        "kernels are assignments `name = expression` ending in return")

    def assign(self, target: ast.expr, value: ast.expr) -> None:
        if isinstance(target, ast.Name):
            self.bind(target.id, self.expr(value))
        elif (isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
              and len(target.elts) == len(value.elts)
              and all(isinstance(t, ast.Name) for t in target.elts)):
            vals = [self.expr(v) for v in value.elts]  # all right sides before any binding
            for t, v in zip(target.elts, vals):
                self.bind(t.id, v)  # type: ignore[attr-defined]
        else:
            raise self.fail(target, f"assignment to {self.src.describe(target)}",
                            "assign to a name, or unpack a tuple of equal length")

    def bind(self, name: str, val: Val) -> None:
        self.env[name] = self.out.let(val, name) if val.type not in WEAK else val

    # -- expressions -----------------------------------------------------------------
    def expr(self, node: ast.expr) -> Val:
        self.out.source, self.out.node = self.src, node
        method = getattr(self, "e_" + type(node).__name__, None)
        if method is None:
            raise self.fail(node, f"expression {self.src.describe(node)}",
                            "not supported in a kernel (see gpustd.kernel_compiler's docs)")
        result: Val = method(node)
        return result

    def e_Constant(self, node: ast.Constant) -> Val:
        if isinstance(node.value, (bool, int, float)):
            return constant(node.value)
        raise self.fail(node, f"constant {node.value!r}", "kernels compute numbers")

    def e_Name(self, node: ast.Name) -> Val:
        if node.id in self.env:
            return self.env[node.id]
        return self.value_of(node, self.resolve(node))

    def e_Attribute(self, node: ast.Attribute) -> Val:
        return self.value_of(node, self.resolve(node))

    def e_UnaryOp(self, node: ast.UnaryOp) -> Val:
        a = self.expr(node.operand)
        if isinstance(node.op, ast.UAdd):
            return a
        if isinstance(node.op, ast.Not):
            return Val("bool", f"!{a.as_('bool')}")
        if isinstance(node.op, ast.USub):
            if a.value is not None and not isinstance(a.value, bool):
                return constant(-a.value)
            t = "i32" if a.type == "bool" else a.type
            return typed(t, lambda u: f"(0u - {a.as_(u)})" if u == "u32" else f"(-{a.as_(u)})")
        if a.type == "bool":  # numpy's ~ of a bool array is logical not
            return Val("bool", f"!{a.text}")
        if is_float(a.type):
            raise self.fail(node, "~ on a float", "bitwise operators need integers")
        return typed(a.type, lambda u: f"(~{a.as_(u)})", ints_only=True)

    def e_BinOp(self, node: ast.BinOp) -> Val:
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise self.fail(node, f"operator {self.src.describe(node)}", "not supported")
        a, b = self.expr(node.left), self.expr(node.right)
        self.out.node = node
        return binary_op(self.out, op, a, b)

    def e_BoolOp(self, node: ast.BoolOp) -> Val:
        joiner = " && " if isinstance(node.op, ast.And) else " || "
        return Val("bool", "(" + joiner.join(self.expr(v).as_("bool") for v in node.values)
                   + ")")

    def e_Compare(self, node: ast.Compare) -> Val:
        parts, left = [], self.expr(node.left)
        for op, right_node in zip(node.ops, node.comparators):
            symbol = _COMPARE.get(type(op))
            if symbol is None:
                raise self.fail(node, f"comparison {self.src.describe(node)}",
                                "use < <= > >= == !=")
            right = self.expr(right_node)
            t = promote(left.type, right.type)
            if t == "bool" and symbol not in ("==", "!="):
                t = "i32"
            t = {"int": "i32", "float": "f32"}.get(t, t)
            parts.append(f"({left.as_(t)} {symbol} {right.as_(t)})")
            left = right
        return Val("bool", parts[0] if len(parts) == 1 else "(" + " && ".join(parts) + ")")

    def e_IfExp(self, node: ast.IfExp) -> Val:
        return _calls.select(self.expr(node.test), self.expr(node.body),
                             self.expr(node.orelse))

    def e_Call(self, node: ast.Call) -> Val:
        if node.keywords:
            raise self.fail(node, f"keyword arguments in {self.src.describe(node)}",
                            "pass arguments by position")
        fn = self.resolve(node.func)
        args = [self.expr(a) for a in node.args]
        self.out.node = node
        found = _calls.lookup(fn)
        if found is not None:
            return found[1](self.out, args)
        inner = getattr(fn, "kernel_source", None)
        if (inner is None and isinstance(fn, types.FunctionType) and not _is_library(fn)
                and not self.is_builtin_name(node.func)):
            inner = parse_function(fn)
        if inner is None:
            raise self.fail(node, f"call to {self.src.describe(node.func)}",
                            "unknown function; kernels can call "
                            + ", ".join(_calls.supported_names())
                            + ", and Python functions defined in files (inlined)")
        return self.inline(node, inner, args)

    def inline(self, node: ast.Call, inner: KernelSource, args: list[Val]) -> Val:
        if self.out.depth >= _MAX_INLINE_DEPTH:
            raise self.fail(node, "recursion", "kernels cannot call themselves")
        self.out.depth += 1
        try:
            results = _Function(inner, self.out).run(args)
        finally:
            self.out.depth -= 1
        if len(results) != 1:
            raise self.fail(node, f"call to {self.src.describe(node.func)}",
                            f"it returns {len(results)} values; use a function with one")
        return results[0]

    # -- names -----------------------------------------------------------------------
    def resolve(self, node: ast.expr) -> Any:
        """The Python object a (dotted) name outside the kernel's locals refers to."""
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id in self.env:
                raise self.fail(node, f"attribute access {self.src.describe(node)}",
                                "kernels see numbers, which have no attributes")
            base = self.resolve(node.value)
            if not isinstance(base, types.ModuleType) and not isinstance(base, type):
                raise self.fail(node, f"attribute access {self.src.describe(node)}",
                                "only module constants and functions (math.pi, np.exp) "
                                "can be used")
            try:
                return getattr(base, node.attr)
            except AttributeError:
                raise self.fail(node, f"{self.src.describe(node)}",
                                f"{base.__name__} has no attribute {node.attr!r}") from None
        if not isinstance(node, ast.Name):
            raise self.fail(node, f"call of {self.src.describe(node)}", "call a named function")
        if node.id in self.env:
            raise self.fail(node, f"call of the value `{node.id}`", "values cannot be called")
        fn = self.src.fn
        free = dict(zip(fn.__code__.co_freevars,
                        (c.cell_contents for c in fn.__closure__ or ())))
        for scope in (free, fn.__globals__, vars(builtins)):
            if node.id in scope:
                return scope[node.id]
        raise self.fail(node, f"name '{node.id}'", "is not defined (kernel arguments: "
                        f"{', '.join(self.src.params) or 'none'})")

    def is_builtin_name(self, node: ast.expr) -> bool:
        """Whether `node` names a builtin (no local, closure or global of that name): a
        library may have replaced the builtin with a Python function of its own (Ray's tqdm
        patches `print`), which is still no function of the kernel's files to inline."""
        fn = self.src.fn
        return (isinstance(node, ast.Name) and node.id not in fn.__code__.co_freevars
                and node.id not in fn.__globals__ and node.id in vars(builtins))

    def value_of(self, node: ast.expr, obj: Any) -> Val:
        if isinstance(obj, (bool, int, float)):
            return constant(obj)
        if isinstance(obj, np.generic) and obj.dtype.kind in "biuf":
            t = type_of_dtype(obj.dtype)
            if t is None:  # 64-bit numpy scalars behave like Python numbers
                return constant(obj.item())
            return Val(t, literal(obj.item(), t), value=obj.item())
        raise self.fail(node, f"{self.src.describe(node)} ({type(obj).__name__})",
                        "a kernel can use numbers from outside (constants) but not "
                        "other objects")


def _is_library(fn: types.FunctionType) -> bool:
    module = getattr(fn, "__module__", "") or ""
    return module.split(".")[0] in ("numpy", "math", "builtins", "gpustd", "gpucore")
