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
Lane l holds of a result matrix (M rows x 16 columns) the elements of rows l / 8 + 4 i
(i < M / 4) and columns l % 8 and l % 8 + 8: those subgroupMatrixStore writes for it; of a
left matrix (M x K) the K values of those rows; of a right matrix (K x 16) those two columns.
A multiply-accumulate is then lane-local, K products per element summed in f32 (each lane does
1/32 of the work, in straight-line code: llvmpipe compiles loops over a lane's elements, which
index its private arrays at run time, three times slower). Elements are held in f32, rounded
to the component type on load: the matrix units' f16 products are exact in f32 and their order
of summation is unspecified, so results equal theirs up to f32 rounding. i8 matrices (the
W8A8 GEMM's 16x16x32) are read from i32 words, four bytes each (offsets and strides count
bytes), held and summed in i32: exact, as on the matrix units. (4 rows x 2 columns a
lane: the fewest loads, 96 a left and right pair; a column a lane took three times as long to
compile.) Data crosses lanes only through memory, as the kernels move it. Real subgroup
builtins beside the matrices (attention's subgroupShuffleXor) run on the adapter's own
subgroups: lanes 2i and 2i + 1 share one on any subgroup size from 2 on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ._errors import GpuError
from ._wgsl import strip_comments

__all__ = ["ENV", "NEEDS", "SHAPES", "SUBGROUP", "lower", "requested", "uses_matrices"]

ENV = "GPUCORE_EMULATE_MATRIX"
SUBGROUP = 32
# (component, result, m, n, k) of the emulated configs, and the features they need (gpucore's
# names): the kernels use f16 and real subgroup builtins beside the matrices.
SHAPES = (("f16", "f32", 16, 16, 16), ("f16", "f16", 16, 16, 16), ("i8", "i32", 16, 16, 32))
NEEDS = ("shader-f16", "subgroup")
_COLUMNS = 16  # of every result and right matrix
_ROW_GROUPS = 4  # a lane's share of a result: every 4th row, 2 columns 8 apart
_LANE_COLUMNS = 2
_FLOATS = ("f16", "f32")
_INTEGERS = ("i8", "i32")

_EXTENSION = "chromium_experimental_subgroup_matrix"
_TYPE = r"subgroup_matrix_(left|right|result)\s*<\s*(\w+)\s*,\s*(\d+)u?\s*,\s*(\d+)u?\s*>"
_TYPE_RE = re.compile(_TYPE)
_ENABLE = re.compile(r"\benable\s+([\w\s,]+);")
_DROPPED = {_EXTENSION, "subgroups"}  # naga refuses both; wgpu-native needs neither
_SUBGROUP_BUILTIN = re.compile(r"@builtin\s*\(\s*(subgroup_id|subgroup_invocation_id|"
                               r"subgroup_size)\s*\)\s*(\w+)")
_INDEX_BUILTIN = re.compile(r"@builtin\s*\(\s*local_invocation_index\s*\)\s*(\w+)")
_DECLARED = [re.compile(rf"\b(\w+)\s*:\s*{_TYPE}"),
             re.compile(rf"\b(?:let|var)\s+(\w+)\s*=\s*subgroupMatrixLoad\s*<\s*{_TYPE}\s*>"),
             re.compile(rf"\b(?:let|var)\s+(\w+)\s*=\s*{_TYPE}\s*\(")]
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


@dataclass(frozen=True)
class _Matrix:
    """One subgroup-matrix type, `<component, cols, rows>` as WGSL writes it."""

    kind: str  # left | right | result
    component: str
    cols: int
    rows: int

    @classmethod
    def parse(cls, hit: re.Match[str], at: int = 1) -> _Matrix:
        kind, component, cols, rows = hit.group(at, at + 1, at + 2, at + 3)
        matrix = cls(kind, component, int(cols), int(rows))
        if component not in _FLOATS + _INTEGERS:
            raise GpuError(f"matrix emulation: {hit.group(0)!r} has components {component}; "
                           f"it emulates {', '.join(_FLOATS + _INTEGERS)} only")
        if (kind != "left" and matrix.cols != _COLUMNS) or (
                kind != "right" and matrix.rows % _ROW_GROUPS):
            raise GpuError(f"matrix emulation: {hit.group(0)!r} is not emulated (result and "
                           f"right matrices of {_COLUMNS} columns, left and result matrices "
                           f"of a multiple of {_ROW_GROUPS} rows)")
        return matrix

    @property
    def name(self) -> str:
        return f"SgMatrix{self.kind.title()}_{self.component}_{self.cols}x{self.rows}"

    @property
    def held(self) -> int:
        """Elements each lane holds (see the module docstring)."""
        return {"left": self.rows // _ROW_GROUPS * self.cols, "right": self.rows * _LANE_COLUMNS,
                "result": self.rows // _ROW_GROUPS * _LANE_COLUMNS}[self.kind]

    def elements(self) -> Iterator[tuple[int, int, int]]:
        """(element index, row, column) of the lane's elements, relative to its first (see
        `base`): rows 4 apart, columns 8 apart."""
        groups = _COLUMNS // _LANE_COLUMNS
        if self.kind == "right":
            yield from ((k * _LANE_COLUMNS + j, k, groups * j)
                        for k in range(self.rows) for j in range(_LANE_COLUMNS))
        elif self.kind == "result":
            yield from ((i * _LANE_COLUMNS + j, _ROW_GROUPS * i, groups * j)
                        for i in range(self.rows // _ROW_GROUPS) for j in range(_LANE_COLUMNS))
        else:
            yield from ((i * self.cols + k, _ROW_GROUPS * i, k)
                        for i in range(self.rows // _ROW_GROUPS) for k in range(self.cols))

    @property
    def held_type(self) -> str:
        """The scalar a lane holds elements in: f32 for floats, i32 for integers."""
        return "i32" if self.component in _INTEGERS else "f32"

    def value(self, expression: str) -> str:
        """`expression` as the f32 an element holds: rounded to the component type first
        (integers: as the i32 it is)."""
        if self.component in _INTEGERS:
            return f"i32({expression})"
        return f"f32({self.component}({expression}))" if self.component != "f32" \
            else f"f32({expression})"

    def read(self, buffer: str, address: str) -> str:
        """The element at `address` of `buffer`, as held (an i8: byte address % 4 of the
        i32 word address / 4, sign-extended)."""
        if self.component == "i8":
            return (f"extractBits({buffer}[({address}) / 4u], "
                    f"(({address}) % 4u) * 8u, 8u)")
        return self.value(f"{buffer}[{address}]")

    def base(self) -> str:
        """The address of the lane's first element (`offset`, `row_step`, `col_step` given)."""
        groups = _COLUMNS // _LANE_COLUMNS
        row = "0u" if self.kind == "right" else f"sgm_lane / {groups}u * row_step"
        col = "0u" if self.kind == "left" else f"sgm_lane % {groups}u * col_step"
        return f"offset + {row} + {col}"


# Straight-line code, every element at a constant index: llvmpipe compiles a loop over a
# lane's elements (indexing its private array at run time) many times slower.
def _prologue(m: _Matrix) -> str:
    return ("  let row_step = select(stride, 1u, col_major);\n"
            "  let col_step = select(1u, stride, col_major);\n"
            f"  let at = {m.base()};")


def _address(row: int, col: int) -> str:
    return f"at + {row}u * row_step + {col}u * col_step"


def _load_fn(name: str, buffer: str, m: _Matrix) -> str:
    body = "\n".join(f"  m.v[{i}] = {m.read(buffer, _address(row, col))};"
                     for i, row, col in m.elements())
    return f"""fn {name}(offset: u32, col_major: bool, stride: u32) -> {m.name} {{
{_prologue(m)}
  var m: {m.name};
{body}
  return m;
}}"""


def _store_fn(name: str, buffer: str, m: _Matrix) -> str:
    body = "\n".join(f"  {buffer}[{_address(row, col)}] = {m.component}(value.v[{i}]);"
                     for i, row, col in m.elements())
    return f"""fn {name}(offset: u32, value: {m.name}, col_major: bool, stride: u32) {{
{_prologue(m)}
{body}
}}"""


def _mma_fn(name: str, a: _Matrix, b: _Matrix, c: _Matrix) -> str:
    if (a.kind, b.kind, c.kind) != ("left", "right", "result") or a.cols != b.rows \
            or a.rows != c.rows or b.cols != c.cols:
        raise GpuError(f"matrix emulation: {a.name} x {b.name} into {c.name} is no product")
    k = a.cols
    sums = []
    for e in range(c.held):
        i, j = divmod(e, _LANE_COLUMNS)
        terms = " + ".join(f"a.v[{i * k + x}] * b.v[{x * _LANE_COLUMNS + j}]" for x in range(k))
        sums.append(f"  out.v[{e}] = {c.value('c.v[' + str(e) + '] + ' + terms)};")
    body = "\n".join(sums)
    return f"""fn {name}(a: {a.name}, b: {b.name}, c: {c.name}) -> {c.name} {{
  var out: {c.name};
{body}
  return out;
}}"""


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


class _Lowering:
    """One shader's lowering: the matrix names it declares and the helpers it needs."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.helpers: dict[str, str] = {}
        self.types: dict[str, set[_Matrix]] = {}
        for pattern in _DECLARED:
            for hit in pattern.finditer(code):
                self.types.setdefault(hit.group(1), set()).add(_Matrix.parse(hit, 2))
        for name, acc in _ACCUMULATED.findall(code):
            self.types.setdefault(name, set()).update(self.types.get(acc, set()))

    def type_of(self, expression: str, call: str) -> _Matrix:
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

    def rewrite(self, name: str, replace: Callable[[str, list[str]], str]) -> None:
        pieces, last = [], 0
        for start, end, template, args in _calls(self.code, name):
            pieces += [self.code[last:start], replace(template, args)]
            last = end
        self.code = "".join(pieces) + self.code[last:]

    def load(self, template: str, args: list[str]) -> str:
        hit = _TYPE_RE.fullmatch(template.strip())
        if hit is None or len(args) != 4:
            raise GpuError(f"matrix emulation: subgroupMatrixLoad<{template}> with {args}")
        m, buffer = _Matrix.parse(hit), self.pointer(args[0], "subgroupMatrixLoad")
        fn = self.helper(f"sgm_load_{buffer}_{m.name}", _load_fn(f"sgm_load_{buffer}_{m.name}",
                                                                 buffer, m))
        return f"{fn}({', '.join(args[1:])})"

    def store(self, template: str, args: list[str]) -> str:
        buffer = self.pointer(args[0], "subgroupMatrixStore")
        m = self.type_of(args[2], "subgroupMatrixStore")
        if m.kind != "result":
            raise GpuError(f"matrix emulation: subgroupMatrixStore of {m.kind} matrix "
                           f"{args[2]!r}; it emulates stores of result matrices only")
        name = f"sgm_store_{buffer}_{m.name}"
        self.helper(name, _store_fn(name, buffer, m))
        return f"{name}({args[1]}, {', '.join(args[2:])})"

    def multiply(self, template: str, args: list[str], *, zero: bool = False) -> str:
        call = "subgroupMatrixMultiply" if zero else "subgroupMatrixMultiplyAccumulate"
        a, b = (self.type_of(x, call) for x in args[:2])
        if zero:
            hit = _TYPE_RE.fullmatch(template.strip())
            if hit is None:
                raise GpuError(f"matrix emulation: {call}<{template}>")
            c, args = _Matrix.parse(hit), [*args, f"{_Matrix.parse(hit).name}()"]
        else:
            c = self.type_of(args[2], call)
        name = f"sgm_mma_{a.name}_{b.name}_{c.name}"
        self.helper(name, _mma_fn(name, a, b, c))
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
    compiles: matrix types become structs of each lane's elements, the matrix builtins
    functions over them (one load and store per buffer and type, no pointer parameters), the
    subgroup builtins values of local_invocation_index; line numbers are kept. Raises
    GpuError naming what it does not emulate."""
    code = strip_comments(source)
    matrices = {_Matrix.parse(hit) for hit in _TYPE_RE.finditer(code)}
    lowering = _Lowering(code)
    lowering.rewrite("subgroupMatrixLoad", lowering.load)
    lowering.rewrite("subgroupMatrixStore", lowering.store)
    lowering.rewrite("subgroupMatrixMultiplyAccumulate", lowering.multiply)
    lowering.rewrite("subgroupMatrixMultiply",
                     lambda t, a: lowering.multiply(t, a, zero=True))
    code = lowering.code
    left = re.search(r"\bsubgroupMatrix\w+", code)
    if left is not None:
        raise GpuError(f"matrix emulation: {left.group(0)} is not emulated (loads, stores, "
                       "multiplies and zero values are)")
    code = _TYPE_RE.sub(lambda hit: _Matrix.parse(hit).name, _entry_points(_directives(code)))
    structs = [f"struct {m.name} {{ v: array<{m.held_type}, {m.held}> }}"
               for m in sorted(matrices, key=lambda m: m.name)]
    return "\n".join([code, "// Subgroup matrices emulated by gpucore/_matrix_emulation.py",
                      "var<private> sgm_lane: u32;", *structs, *lowering.helpers.values()])
