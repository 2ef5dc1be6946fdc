"""Subgroup matrices emulated in plain WGSL: a lowering of WGSL's
`chromium_experimental_subgroup_matrix` (Dawn's matrix units) that naga accepts, so that the
matrix-unit kernels run on wgpu-native, software adapters included (CI's lavapipe checks their
results). A test vehicle and a fallback, not a speed path: the GPU under Dawn stays the speed
truth (docs/gpu-compute.md, "Matrix units emulated", says what it costs).

GPUCORE_EMULATE_MATRIX=1 makes every wgpu-native adapter with shader-f16 and subgroups report
SHAPES as its matrix configs (what an H100 reports under Dawn, of the shapes gpustd uses), so
ops take their matrix-unit plans there; `AdapterInfo.with_emulated_matrices()` does it for one
adapter (the tests' way). wgpu-native then compiles every such shader through `lower`
(gpucore._runtime.adapt_source).

A subgroup is 32 invocations of consecutive local_invocation_index, as the generators assume:
`subgroup_id` is index / 32, `subgroup_invocation_id` (the lane) index % 32, `subgroup_size` 32.
What each lane holds of a matrix, and the functions over it: gpucore._matrix_lanes. A left or
right matrix is *viewed* (read in place by its products) where it is a `let` whose every use
up to the end of its block is a product with another such matrix, and nothing in between can
change the memory it was loaded from: no barrier, no call of the shader's own functions, no
store to or other use of that array; the others are held. Data crosses lanes only through
memory, as the kernels move it. Real subgroup builtins beside the matrices (attention's
subgroupShuffleXor) run on the adapter's own subgroups: lanes 2i and 2i + 1 share one on any
subgroup size from 2 on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator

from . import _matrix_lanes as lanes
from ._errors import GpuError
from ._matrix_lanes import VIEW, Matrix
from ._wgsl import strip_comments

__all__ = ["ENV", "NEEDS", "SHAPES", "SUBGROUP", "lower", "requested", "uses_matrices"]

ENV = "GPUCORE_EMULATE_MATRIX"
SUBGROUP = 32
# (component, result, m, n, k) of the emulated configs, and the features they need (gpucore's
# names): the kernels use f16 and real subgroup builtins beside the matrices.
SHAPES = (("f16", "f32", 16, 16, 16), ("f16", "f16", 16, 16, 16), ("i8", "i32", 16, 16, 32))
NEEDS = ("shader-f16", "subgroup")

_EXTENSION = "chromium_experimental_subgroup_matrix"
_TYPE = lanes.TYPE
_TYPE_RE = re.compile(_TYPE)
_ENABLE = re.compile(r"\benable\s+([\w\s,]+);")
_DROPPED = {_EXTENSION, "subgroups"}  # naga refuses both; wgpu-native needs neither
_SUBGROUP_BUILTIN = re.compile(r"@builtin\s*\(\s*(subgroup_id|subgroup_invocation_id|"
                               r"subgroup_size)\s*\)\s*(\w+)")
_INDEX_BUILTIN = re.compile(r"@builtin\s*\(\s*local_invocation_index\s*\)\s*(\w+)")
_DECLARED = [re.compile(rf"\b(\w+)\s*:\s*{_TYPE}"),
             re.compile(rf"\b(?:let|var)\s+(\w+)\s*=\s*subgroupMatrixLoad\s*<\s*{_TYPE}\s*>"),
             re.compile(rf"\b(?:let|var)\s+(\w+)\s*=\s*{_TYPE}\s*\(")]
_VIEWABLE = re.compile(r"\blet\s+(\w+)\s*=\s*subgroupMatrixLoad\s*<\s*subgroup_matrix_"
                       r"(?:left|right)\b[^(;]*\(\s*&\s*(\w+)\s*,[^;]*;")
_LOOP = re.compile(r"\b(?:for|loop|while)\b")
_SYNC = re.compile(r"\b\w*Barrier\b|\bworkgroupUniformLoad\b")
_PRODUCTS = ("subgroupMatrixMultiplyAccumulate", "subgroupMatrixMultiply")
_ACCUMULATED = re.compile(r"\b(?:let|var)\s+(\w+)\s*=\s*subgroupMatrixMultiplyAccumulate\s*\("
                          r"\s*\w+\s*,\s*\w+\s*,\s*(\w+)\s*\)")


def requested() -> bool:
    """Whether GPUCORE_EMULATE_MATRIX asks for emulated matrix units (1/true/yes/on)."""
    value = os.environ.get(ENV, "").strip().lower()
    if value not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
        raise GpuError(f"{ENV}={value!r}: use 1 (emulate the matrix units on wgpu-native) or 0")
    return value in ("1", "true", "yes", "on")


def uses_matrices(source: str) -> bool:
    """Whether `source` enables the subgroup-matrix extension (then wgpu-native needs `lower`)."""
    return _EXTENSION in source and bool(
        re.search(rf"\benable\b[^;]*\b{_EXTENSION}\b", strip_comments(source)))


def _arguments(code: str, open_at: int) -> tuple[int, list[str]]:
    """(the end of, the top-level arguments in) the parenthesized list opening at `open_at`."""
    depth, args, piece_at = 0, [], open_at + 1
    for pos in range(open_at, len(code)):
        char = code[pos]
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(char, 0)
        if depth == 1 and char == ",":
            args.append(code[piece_at:pos].strip())
            piece_at = pos + 1
        if depth == 0:
            args.append(code[piece_at:pos].strip())
            return pos + 1, [a for a in args if a]
    raise GpuError("matrix emulation: unbalanced parentheses")


def _calls(code: str, name: str) -> Iterator[tuple[int, int, str, list[str]]]:
    """(start, end, template, arguments) of each call of `name` (`name<template>(args)`)."""
    for hit in re.finditer(rf"\b{name}\b\s*", code):
        at, template = hit.end(), ""
        if code[at] == "<":
            depth, start = 0, at
            while True:
                depth += {"<": 1, ">": -1}.get(code[at], 0)
                at += 1
                if depth == 0:
                    break
            template = code[start + 1:at - 1]
        at = code.index("(", at)
        end, args = _arguments(code, at)
        yield hit.start(), end, template, args


def _block_end(code: str, at: int) -> int:
    """The position of the `}` that closes the block `at` lies in."""
    depth = 0
    for pos in range(at, len(code)):
        depth += {"{": 1, "}": -1}.get(code[pos], 0)
        if depth < 0:
            return pos
    return len(code)


def _product_operands(code: str) -> Iterator[list[str]]:
    """The two matrix operands of each product in `code`."""
    for product in _PRODUCTS:
        for _, _, _, args in _calls(code, product):
            yield args[:2]


def _viewed(code: str) -> dict[str, str]:
    """The left and right matrices read in place by their products (the module docstring
    says which), by name, each with the array it views. What runs between a load and its
    last use is the code up to that use, or where a loop lies in between (whose later
    iterations run past it) the rest of the load's block."""
    functions = set(re.findall(r"\bfn\s+(\w+)", code))
    views: dict[str, str] = {}
    held: set[str] = set()
    for hit in _VIEWABLE.finditer(code):
        name, array = hit.groups()
        rest = code[hit.end():_block_end(code, hit.end())]
        uses = list(re.finditer(rf"\b{name}\b", rest))
        last = rest.find(";", uses[-1].end()) if uses else 0
        if last >= 0 and not _LOOP.search(rest[:last]):  # a loop may run on past the last use
            rest = rest[:last + 1]
        as_operand = sum(args.count(name) for args in _product_operands(rest))
        loads = len(re.findall(rf"subgroupMatrixLoad\s*<[^(;]*\(\s*&\s*{array}\b", rest))
        unchanged = (not _SYNC.search(rest) and loads == len(re.findall(rf"\b{array}\b", rest))
                     and not functions & set(re.findall(r"\b(\w+)\s*\(", rest)))
        if unchanged and as_operand == len(re.findall(rf"\b{name}\b", rest)) \
                and views.setdefault(name, array) == array:
            continue
        held.add(name)
    views = {name: array for name, array in views.items() if name not in held}
    while True:  # a product reads both operands in place or neither
        lone = {x for pair in _product_operands(code) if (pair[0] in views) != (pair[1] in views)
                for x in pair if x in views}
        if not lone:
            return views
        views = {name: array for name, array in views.items() if name not in lone}


class _Lowering:
    """One shader's lowering: the matrix names it declares and the helpers it needs."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.helpers: dict[str, str] = {}
        self.types: dict[str, set[Matrix]] = {}
        for pattern in _DECLARED:
            for hit in pattern.finditer(code):
                self.types.setdefault(hit.group(1), set()).add(Matrix.parse(hit, 2))
        for name, acc in _ACCUMULATED.findall(code):
            self.types.setdefault(name, set()).update(self.types.get(acc, set()))
        self.views = _viewed(code)

    def type_of(self, expression: str, call: str) -> Matrix:
        found = self.types.get(expression, set())
        if len(found) != 1:
            why = "several matrix types" if found else "no matrix type"
            raise GpuError(f"matrix emulation: in {call}, {expression!r} has {why}; the "
                           "emulation resolves a matrix argument by the name it was declared "
                           "with (one matrix type per name)")
        return next(iter(found))

    def helper(self, name: str, make: str) -> str:
        self.helpers.setdefault(name, make)
        return name

    def pointer(self, argument: str, call: str) -> str:
        hit = re.fullmatch(r"&\s*(\w+)", argument)
        if hit is None:
            raise GpuError(f"matrix emulation: {call} takes {argument!r}; it emulates "
                           "pointers to a whole module-scope array (`&name`) only")
        return hit.group(1)

    def rewrite(self, name: str, replace: Callable[[str, list[str], str], str]) -> None:
        """Each call of `name` replaced by `replace(template, arguments, the name a let
        binds it to or "")`."""
        pieces, last = [], 0
        for start, end, template, args in _calls(self.code, name):
            bound = re.search(r"\blet\s+(\w+)\s*=\s*$", self.code[max(0, start - 100):start])
            pieces += [self.code[last:start], replace(template, args, bound[1] if bound else "")]
            last = end
        self.code = "".join(pieces) + self.code[last:]

    def load(self, template: str, args: list[str], bound: str) -> str:
        hit = _TYPE_RE.fullmatch(template.strip())
        if hit is None or len(args) != 4:
            raise GpuError(f"matrix emulation: subgroupMatrixLoad<{template}> with {args}")
        m, buffer = Matrix.parse(hit), self.pointer(args[0], "subgroupMatrixLoad")
        kind = "view" if bound in self.views else "load"
        name = f"sgm_{kind}_{buffer}_{m.name}"
        self.helper(name, lanes.view_fn(name, m) if kind == "view"
                    else lanes.load_fn(name, buffer, m))
        return f"{name}({', '.join(args[1:])})"

    def store(self, template: str, args: list[str], bound: str) -> str:
        buffer = self.pointer(args[0], "subgroupMatrixStore")
        m = self.type_of(args[2], "subgroupMatrixStore")
        if m.kind != "result":
            raise GpuError(f"matrix emulation: subgroupMatrixStore of {m.kind} matrix "
                           f"{args[2]!r}; it emulates stores of result matrices only")
        name = f"sgm_store_{buffer}_{m.name}"
        self.helper(name, lanes.store_fn(name, buffer, m))
        return f"{name}({args[1]}, {', '.join(args[2:])})"

    def multiply(self, template: str, args: list[str], bound: str, *,
                 zero: bool = False) -> str:
        call = "subgroupMatrixMultiply" if zero else "subgroupMatrixMultiplyAccumulate"
        a, b = (self.type_of(x, call) for x in args[:2])
        if zero:
            hit = _TYPE_RE.fullmatch(template.strip())
            if hit is None:
                raise GpuError(f"matrix emulation: {call}<{template}>")
            c, args = Matrix.parse(hit), [*args, f"{Matrix.parse(hit).name}()"]
        else:
            c = self.type_of(args[2], call)
        if args[0] in self.views:  # and so args[1] (_viewed)
            arrays = self.views[args[0]], self.views[args[1]]
            name = f"sgm_mma_{arrays[0]}_{a.name}_{arrays[1]}_{b.name}_{c.name}"
            self.helper(name, lanes.in_place_product_fn(name, a, arrays[0], b, arrays[1], c))
        else:
            name = f"sgm_mma_{a.name}_{b.name}_{c.name}"
            self.helper(name, lanes.product_fn(name, a, b, c))
        return f"{name}({', '.join(args)})"


def _directives(code: str) -> str:
    def keep(hit: re.Match[str]) -> str:
        names = [n.strip() for n in hit.group(1).split(",") if n.strip() not in _DROPPED]
        return f"enable {', '.join(names)};" if names else ""
    return _ENABLE.sub(keep, code)


def _entry_points(code: str) -> str:
    """Every entry point's subgroup builtins become values of local_invocation_index."""
    for hit in reversed(list(re.finditer(r"@compute\b[^{;]*?\bfn\s+\w+\s*\(", code))):
        opened = hit.end() - 1
        close, params = _arguments(code, opened)
        index = next((m.group(1) for p in params if (m := _INDEX_BUILTIN.search(p))), None)
        kept = [p for p in params if not _SUBGROUP_BUILTIN.search(p)]
        if index is None:
            index = "sgm_index"
            kept.append(f"@builtin(local_invocation_index) {index}: u32")
        values = {"subgroup_id": f"{index} / {SUBGROUP}u",
                  "subgroup_invocation_id": f"{index} % {SUBGROUP}u",
                  "subgroup_size": f"{SUBGROUP}u"}
        lets = [f"let {m.group(2)} = {values[m.group(1)]};"
                for p in params if (m := _SUBGROUP_BUILTIN.search(p))]
        listed = ", ".join(kept)
        listed += "\n" * max(0, code[opened:close].count("\n") - listed.count("\n"))
        body = code.index("{", close)
        code = (code[:opened + 1] + listed + code[close - 1:body + 1]
                + f" sgm_lane = {index} % {SUBGROUP}u; {' '.join(lets)}" + code[body + 1:])
    return code


def lower(source: str) -> str:
    """`source` (WGSL using chromium_experimental_subgroup_matrix) as plain WGSL that naga
    compiles: matrix types become structs of each lane's elements (or views of them), the
    matrix builtins functions over them (one load and store per buffer and type, no pointer
    parameters), the subgroup builtins values of local_invocation_index; line numbers are
    kept. Raises GpuError naming what it does not emulate."""
    code = strip_comments(source)
    matrices = {Matrix.parse(hit) for hit in _TYPE_RE.finditer(code)}
    lowering = _Lowering(code)
    lowering.rewrite("subgroupMatrixLoad", lowering.load)
    lowering.rewrite("subgroupMatrixStore", lowering.store)
    lowering.rewrite("subgroupMatrixMultiplyAccumulate", lowering.multiply)
    lowering.rewrite("subgroupMatrixMultiply",
                     lambda t, a, bound: lowering.multiply(t, a, bound, zero=True))
    code = lowering.code
    left = re.search(r"\bsubgroupMatrix\w+", code)
    if left is not None:
        raise GpuError(f"matrix emulation: {left.group(0)} is not emulated (loads, stores, "
                       "multiplies and zero values are)")
    code = _TYPE_RE.sub(lambda hit: Matrix.parse(hit).name, _entry_points(_directives(code)))
    structs = [f"struct {m.name} {{ v: array<{m.held_type}, {m.held}> }}"
               for m in sorted(matrices, key=lambda m: m.name)]
    structs += [f"struct {VIEW} {{ at: u32, row_step: u32, col_step: u32 }}"] \
        if lowering.views else []
    return "\n".join([code, "// Subgroup matrices emulated by gpucore/_matrix_emulation.py",
                      "var<private> sgm_lane: u32;", *structs, *lowering.helpers.values()])
