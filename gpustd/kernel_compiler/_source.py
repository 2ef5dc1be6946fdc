"""Reading a kernel's Python source: its AST, where it lives, and what may appear in it.

The structural check runs when the decorator is applied, so a loop or a string in a kernel
is reported at its definition; names are resolved later, on the first call, because module
globals a kernel uses may be defined after it.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["KernelCompileError", "KernelSource", "parse_function"]


class KernelCompileError(ValueError):
    """A kernel's Python source uses something that cannot be compiled to WGSL.

    `filename`, `lineno` and `construct` say where and what; the message says what to do.
    """

    def __init__(self, filename: str, lineno: int, kernel: str, construct: str,
                 hint: str) -> None:
        self.filename, self.lineno, self.construct = filename, lineno, construct
        super().__init__(f"{filename}:{lineno}: kernel '{kernel}' cannot be compiled: "
                         f"{construct}: {hint}")


@dataclass(frozen=True)
class KernelSource:
    """A parsed kernel function (a `def` or a `lambda`) and its place in its file."""

    fn: Callable[..., Any]
    node: ast.FunctionDef | ast.Lambda
    filename: str
    line_offset: int  # add to an AST line number to get the file's line number

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", "<kernel>")

    @property
    def params(self) -> list[str]:
        return [a.arg for a in self.node.args.args]

    def error(self, node: ast.AST, construct: str, hint: str) -> KernelCompileError:
        line = getattr(node, "lineno", 1) + self.line_offset
        return KernelCompileError(self.filename, line, self.name, construct, hint)

    def describe(self, node: ast.AST) -> str:
        """`node` quoted as it reads in the source (shortened)."""
        lines = ast.unparse(node).splitlines()
        text = lines[0] + (" ..." if len(lines) > 1 else "")
        return f"`{text if len(text) <= 60 else text[:57] + '...'}`"


def _lambda_node(fn: Callable[..., Any], filename: str) -> tuple[ast.Lambda, int]:
    # getsource() of a lambda returns whole lines that rarely parse on their own, so the
    # whole file is parsed and the lambda picked by its line and its body's first column.
    code = fn.__code__
    with open(filename, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename)
    positions = [(ln, col) for ln, _, col, end in code.co_positions()
                 if ln is not None and col is not None and end]  # (0, 0): the prologue
    start = min(positions) if positions else (code.co_firstlineno, 0)
    names = list(code.co_varnames[:code.co_argcount])
    found = [n for n in ast.walk(tree) if isinstance(n, ast.Lambda)
             and [a.arg for a in n.args.args] == names
             and (n.body.lineno, n.body.col_offset) <= start
             <= (n.body.end_lineno or n.body.lineno, n.body.end_col_offset or 0)]
    if len(found) != 1:
        raise KernelCompileError(filename, code.co_firstlineno, "<lambda>", "lambda",
                                 "its source cannot be found; write it as a def")
    return found[-1], 0


def parse_function(fn: Callable[..., Any]) -> KernelSource:
    """The AST of `fn` (which must be a Python function with its source in a file)."""
    if not inspect.isfunction(fn):
        raise TypeError(f"a kernel must be a Python function (def or lambda), got "
                        f"{type(fn).__name__}")
    filename = inspect.getsourcefile(fn) or "<unknown>"
    try:
        if fn.__name__ == "<lambda>":
            node, offset = _lambda_node(fn, filename)
        else:
            lines, first = inspect.getsourcelines(fn)
            tree = ast.parse(textwrap.dedent("".join(lines)))
            node = tree.body[0]  # type: ignore[assignment]
            offset = first - 1
    except (OSError, SyntaxError) as exc:
        raise KernelCompileError(filename, fn.__code__.co_firstlineno, fn.__qualname__,
                                 "source", f"cannot read the function's source ({exc}); "
                                 "define kernels in a .py file") from None
    source = KernelSource(fn, node, filename, offset)  # type: ignore[arg-type]
    _check_structure(source)
    return source


_CONSTRUCTS = {
    ast.For: ("for loop", "loops cannot be compiled; express the body elementwise"),
    ast.While: ("while loop", "loops cannot be compiled; express the body elementwise"),
    ast.If: ("if statement", "use a conditional expression `a if c else b` or where(c, a, b)"),
    ast.Subscript: ("indexing", "kernels see one element of each argument; index outside"),
    ast.Attribute: ("attribute access", "only module constants and functions such as "
                    "math.pi or math.exp can be used"),
    ast.Lambda: ("lambda", "define the helper as an expression in the kernel instead"),
    ast.List: ("list", "kernels compute scalars; return a tuple for several outputs"),
    ast.ListComp: ("comprehension", "kernels compute scalars"),
    ast.JoinedStr: ("f-string", "kernels compute numbers"),
    ast.With: ("with statement", "not supported in a kernel"),
    ast.Try: ("try statement", "not supported in a kernel"),
    ast.Raise: ("raise statement", "a kernel cannot raise"),
    ast.Assert: ("assert statement", "a kernel cannot raise"),
    ast.Global: ("global statement", "kernels cannot write globals"),
    ast.Nonlocal: ("nonlocal statement", "kernels cannot write outer variables"),
    ast.FunctionDef: ("nested function", "not supported; inline it"),
    ast.Import: ("import", "import at module level"),
    ast.ImportFrom: ("import", "import at module level"),
    ast.NamedExpr: ("assignment expression (:=)", "use a separate assignment"),
}


def _check_structure(source: KernelSource) -> None:
    node = source.node
    args = node.args
    if args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs or args.defaults:
        raise source.error(node, "parameters", "kernels take plain positional parameters "
                           "(no defaults, *args, **kwargs or keyword-only ones)")
    body: list[ast.AST] = [node.body] if isinstance(node, ast.Lambda) else list(node.body)
    for top in body:
        for child in ast.walk(top):
            if isinstance(child, ast.Attribute) and _dotted(child):
                continue  # math.pi, np.exp: resolved (and checked) on the first call
            if isinstance(child, ast.Constant) and isinstance(child.value, (str, bytes)):
                if child is not top and not _is_docstring(child, body):
                    raise source.error(child, "string constant", "kernels compute numbers")
            for kind, (construct, hint) in _CONSTRUCTS.items():
                if type(child) is kind:
                    raise source.error(child, f"{construct} {source.describe(child)}", hint)


def _dotted(node: ast.expr) -> bool:
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name)


def _is_docstring(node: ast.Constant, body: list[ast.AST]) -> bool:
    first = body[0] if body else None
    return isinstance(first, ast.Expr) and first.value is node
