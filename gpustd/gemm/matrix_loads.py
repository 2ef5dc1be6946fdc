"""What the subgroup-matrix generator (gpustd/gemm/matrix_codegen.py) needs to know of an
operand's component type, and the global loads it stages: the bottom of the generator,
imported by its modules (matrix_tile, matrix_loop, matrix_codegen, which re-exports the load
helpers) and importing none of them.

Two component types: f16 (16x16x16 fragments, staged as f16) and i8 (16x16x32 fragments, the
W8A8 GEMM's: gpustd/gemm/int8_units.py). WGSL has no 8-bit scalar: i8 matrices are stored four
to an i32 word (little-endian bytes, the first K element in the low byte), staged and loaded as
words, and subgroupMatrixLoad's offset and stride count i8 elements (bytes) all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["COMPONENTS", "HALF8", "Component", "contiguous_load", "fragment_stride",
           "load_type", "load_width", "widest_load"]

# A global load of 8 f16 (16 bytes): a struct rather than vec4<u32> so that the binding still
# holds f16 (gpucore checks a buffer's element type against the binding's).
HALF8 = "struct Half8 { lo: vec4<f16>, hi: vec4<f16> }"


@dataclass(frozen=True)
class Component:
    """One fragment component type: `name` as WGSL's matrix types write it, `word` the WGSL
    scalar it is stored and staged as, `pack` elements per word, `depth` the fragments' K,
    `loads` the WGSL type of a global load of 1, 4 (and 8) words, `accumulators` the result
    types a tile may accumulate in (the first the default)."""

    name: str
    word: str
    pack: int
    depth: int
    loads: dict[int, str]
    accumulators: tuple[str, ...]

    @property
    def word_bytes(self) -> int:
        return 2 if self.word == "f16" else 4


COMPONENTS = {
    "f16": Component("f16", "f16", 1, 16, {1: "f16", 4: "vec4<f16>", 8: "Half8"},
                     ("f32", "f16")),
    "i8": Component("i8", "i32", 4, 32, {1: "i32", 4: "vec4<i32>"}, ("i32",)),
}


def fragment_stride(words: int, component: str) -> int:
    """subgroupMatrixLoad's stride argument for staged rows `words` apart: in elements, an
    i8 matrix's too (Tint divides offset and stride by 4 for SPIR-V's i32 pointer; seen on an
    H100, bench/int8_gemm.py checks it)."""
    return words * COMPONENTS[component].pack


def load_type(width: int, component: str = "f16") -> str:
    """The WGSL type of a global load of `width` words (f16: 1, 4 or 8; i8: 1 or 4 words of
    four)."""
    return COMPONENTS[component].loads[width]


def contiguous_load(name: str, width: int, rows: str, cols: str, ld: str, base: str,
                    binding: str = "", checked: bool = True, component: str = "f16",
                    clamp: str = "") -> str:
    """WGSL `load_{name}(row, col)` of a row-major matrix in `binding` (default: name; rows x
    cols words, `ld` words between rows, from word `base`): `width` words from (row, col),
    zeros outside. A vector load lies wholly inside or outside (cols, ld are multiples).
    checked=False: no bound check (an aligned kernel never loads outside).
    clamp "row" or "col" (with checked=False): that coordinate clamped into the matrix, no
    branch: past the last row (or vector of columns) the last one is read again, where the
    kernel's products from it land in rows of C that it never stores (only M ragged)."""
    kind = load_type(width, component)
    check = f"\n  if (row >= {rows} || col >= {cols}) {{ return {kind}(); }}" if checked else ""
    row = f"min(row, {rows} - 1u)" if clamp == "row" else "row"
    col = f"min(col, {cols} - {width}u)" if clamp == "col" else "col"
    return f"""fn load_{name}(row: u32, col: u32) -> {kind} {{{check}
  return {binding or name}[({base} + {row} * {ld} + {col}) / {width}u];
}}"""


def widest_load(contiguous: int, offsets: tuple[int, ...], *, most: int,
                component: str = "f16") -> int:
    """Words per global load an operand allows, at most `most`: its contiguous extent and
    every offset into it must be multiples of the width (each vector load stays inside one
    row)."""
    loads = COMPONENTS[component].loads
    for width in (8, 4):
        if (width <= most and width in loads and contiguous % width == 0
                and all(o % width == 0 for o in offsets)):
            return width
    return 1


class _Staged(Protocol):
    """What load_width reads of a gpustd.gemm.matrix_tile.MatrixTile."""

    @property
    def wide(self) -> bool: ...

    @property
    def component(self) -> str: ...


def load_width(tile: _Staged, contiguous: int, offsets: tuple[int, ...]) -> int:
    """Words per global load an operand of `tile` allows (widest_load; 8 f16 only in a `wide`
    tile)."""
    return widest_load(contiguous, offsets, most=8 if tile.wide else 4,
                       component=tile.component)
