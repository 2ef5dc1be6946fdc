"""What each lane of an emulated subgroup holds of a subgroup matrix, and the plain-WGSL
functions over those elements (gpucore._matrix_emulation rewrites a shader to call them).

A subgroup is 32 lanes. Lane l holds of a result matrix (M rows x 16 columns) the elements of
rows l / 8 + 4 i (i < M / 4) and columns l % 8 and l % 8 + 8: those subgroupMatrixStore writes
for it; of a left matrix (M x K) the K values of those rows; of a right matrix (K x 16) those
two columns. A multiply-accumulate is then lane-local, K products per element summed in f32
(each lane does 1/32 of the work). (4 rows x 2 columns a lane: the fewest loads, 96 a left
and right pair; a column a lane took three times as long to compile.) Elements are held in
f32, rounded to the component type on load: the matrix units' f16 products are exact in f32
and their order of summation is unspecified, so results equal theirs up to f32 rounding. i8
matrices (the W8A8 GEMM's 16x16x32) are read from i32 words, four bytes each (offsets and
strides count bytes), held and summed in i32: exact, as on the matrix units.

A held matrix is a struct of its lane's elements, each at a constant index, in straight-line
code: llvmpipe compiles a loop over a lane's elements, which indexes its private array at run
time, many times slower. A left or right matrix whose product reads the memory it was loaded
from unchanged (gpucore._matrix_emulation decides which) is not held at all but *viewed*: its
address and steps, and the product reads its elements in place, in a loop over K with the
lane's sums in registers. Its code is a K-th of the held product's and its loads, the same
sums in the same order (a 64 x 160 GEMM tile's compile on llvmpipe: 32 s held, 10 s viewed).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from ._errors import GpuError

__all__ = ["TYPE", "VIEW", "Matrix", "in_place_product_fn", "load_fn", "product_fn",
           "store_fn", "view_fn"]

_COLUMNS = 16  # of every result and right matrix
_ROW_GROUPS = 4  # a lane's share of a result: every 4th row, 2 columns 8 apart
_LANE_COLUMNS = 2
_FLOATS = ("f16", "f32")
_INTEGERS = ("i8", "i32")
TYPE = r"subgroup_matrix_(left|right|result)\s*<\s*(\w+)\s*,\s*(\d+)u?\s*,\s*(\d+)u?\s*>"
VIEW = "SgMatrixView"  # a viewed matrix: its lane's first element's address and the steps


@dataclass(frozen=True)
class Matrix:
    """One subgroup-matrix type, `<component, cols, rows>` as WGSL writes it."""

    kind: str  # left | right | result
    component: str
    cols: int
    rows: int

    @classmethod
    def parse(cls, hit: re.Match[str], at: int = 1) -> Matrix:
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


def _prologue(m: Matrix) -> str:
    return ("  let row_step = select(stride, 1u, col_major);\n"
            "  let col_step = select(1u, stride, col_major);\n"
            f"  let at = {m.base()};")


def _address(row: int, col: int) -> str:
    return f"at + {row}u * row_step + {col}u * col_step"


def load_fn(name: str, buffer: str, m: Matrix) -> str:
    """`fn name(offset, col_major, stride) -> m`: the lane's elements of `buffer`, held."""
    body = "\n".join(f"  m.v[{i}] = {m.read(buffer, _address(row, col))};"
                     for i, row, col in m.elements())
    return f"""fn {name}(offset: u32, col_major: bool, stride: u32) -> {m.name} {{
{_prologue(m)}
  var m: {m.name};
{body}
  return m;
}}"""


def view_fn(name: str, m: Matrix) -> str:
    """`fn name(offset, col_major, stride) -> VIEW`: where the lane's elements of an `m` lie."""
    return f"""fn {name}(offset: u32, col_major: bool, stride: u32) -> {VIEW} {{
{_prologue(m)}
  return {VIEW}(at, row_step, col_step);
}}"""


def store_fn(name: str, buffer: str, m: Matrix) -> str:
    """`fn name(offset, value, col_major, stride)`: the lane's elements of `value` to `buffer`."""
    body = "\n".join(f"  {buffer}[{_address(row, col)}] = {m.component}(value.v[{i}]);"
                     for i, row, col in m.elements())
    return f"""fn {name}(offset: u32, value: {m.name}, col_major: bool, stride: u32) {{
{_prologue(m)}
{body}
}}"""


def _check_product(a: Matrix, b: Matrix, c: Matrix) -> None:
    if (a.kind, b.kind, c.kind) != ("left", "right", "result") or a.cols != b.rows \
            or a.rows != c.rows or b.cols != c.cols:
        raise GpuError(f"matrix emulation: {a.name} x {b.name} into {c.name} is no product")


def product_fn(name: str, a: Matrix, b: Matrix, c: Matrix) -> str:
    """`fn name(a, b, c) -> c`: c + a b of held matrices, each element's K products summed in
    ascending K after c."""
    _check_product(a, b, c)
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


def in_place_product_fn(name: str, a: Matrix, a_buffer: str, b: Matrix, b_buffer: str,
                        c: Matrix) -> str:
    """`fn name(a, b, c) -> c`: product_fn's sums, in its order, of viewed matrices (VIEWs of
    `a_buffer` and `b_buffer`): a loop over K reading each step's 4 rows of a and 2 columns
    of b in place. (Its names start sgm_: a shader's arrays may be called a, b or c.)"""
    _check_product(a, b, c)
    rows, groups = c.rows // _ROW_GROUPS, _COLUMNS // _LANE_COLUMNS
    sums = "\n".join(f"  var sgm_s{e} = sgm_c.v[{e}];" for e in range(c.held))
    a_at = [f"sgm_a.at + {_ROW_GROUPS * i}u * sgm_a.row_step + sgm_k * sgm_a.col_step"
            for i in range(rows)]
    b_at = [f"sgm_b.at + sgm_k * sgm_b.row_step + {groups * j}u * sgm_b.col_step"
            for j in range(_LANE_COLUMNS)]
    reads = [f"    let sgm_a{i} = {a.read(a_buffer, at)};" for i, at in enumerate(a_at)]
    reads += [f"    let sgm_b{j} = {b.read(b_buffer, at)};" for j, at in enumerate(b_at)]
    adds = [f"    sgm_s{e} = sgm_s{e} + sgm_a{e // _LANE_COLUMNS} * sgm_b{e % _LANE_COLUMNS};"
            for e in range(c.held)]
    outs = "\n".join(f"  sgm_out.v[{e}] = {c.value(f'sgm_s{e}')};" for e in range(c.held))
    loop = "\n".join(reads + adds)
    return f"""fn {name}(sgm_a: {VIEW}, sgm_b: {VIEW}, sgm_c: {c.name}) -> {c.name} {{
{sums}
  for (var sgm_k = 0u; sgm_k < {a.cols}u; sgm_k++) {{
{loop}
  }}
  var sgm_out: {c.name};
{outs}
  return sgm_out;
}}"""
