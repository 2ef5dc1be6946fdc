"""The generator behind the subgroup-matrix kernels (WGSL `chromium_experimental_subgroup_matrix`,
Dawn): f16 operands staged in workgroup memory, 16x16x16 fragments multiplied on the matrix
units, f32 (or, for comparison, f16) accumulation. gpustd/gemm/matrix_units.py (GEMM)
and gpustd/nn/_conv_subgroup_matrix.py (implicit-GEMM conv2d) build their kernels here.

The WGSL is generated, not read from shaders/: a subgroup's FM x FN accumulators and its
fragments must be named variables (an array of matrices indexed in a loop goes to local
memory), so the code is unrolled per tile shape. naga cannot parse the extension, which is
one more reason it stays out of shaders/ (every file there compiles on every adapter).

A workgroup of WM x WN subgroups computes a (16 FM WM) x (16 FN WN) tile of C. Per K step
of BK, the operands' tiles are staged in workgroup memory (zero-filled outside the matrix,
so ragged M, N, K need no special case; 4 or 8 f16 per global load where the contiguous
dimension allows), the next step's global loads in flight while the current one multiplies
(`MatrixTile.prefetch`; without it each step loads, stages and multiplies in turn).
An `aligned` kernel (M, N, K whole multiples of the tile and of BK) checks no bound (H100: the
64x128 GEMM at 4096^3 nt/nn 90.5/104.4 TFLOP/s against the checked kernel's 62.9/67.6);
one aligned in N and K only (`ragged_m`) checks only C's rows in its epilogue.
An operand stored K-major on the "wrong" side (A transposed, B not transposed is row-major
K x N) is staged as stored and its fragments loaded column-major where needed. The caller
supplies each operand's global load (`load_a(row, col)`, `load_b(row, col)` in the stored
matrix's coordinates, zero outside it), its bindings and `store_c(row, col, value)`; the
epilogue goes through workgroup memory a fragment at a time and calls store_c per element.

This module assembles a kernel and writes its epilogue; the tile's geometry (MatrixTile,
Operand) is gpustd/gemm/matrix_tile.py's, the staging and the K loop
gpustd/gemm/matrix_loop.py's, the component types and global loads
gpustd/gemm/matrix_loads.py's (its load helpers re-exported here, with MatrixTile and Operand).
"""

from __future__ import annotations

import re

from .matrix_loads import HALF8, contiguous_load, load_type, load_width
from .matrix_loop import k_range, main_loop, multiply_code, stage_code
from .matrix_tile import MatrixTile, Operand

__all__ = ["MatrixTile", "Operand", "contiguous_load", "kernel_source", "load_type", "load_width"]


def kernel_source(tile: MatrixTile, a: Operand, b: Operand, *, declarations: str, setup: str,
                  extent: tuple[str, str, str], comment: str, aligned: bool = False,
                  split: str = "", parts: int = 1, pairs: bool = False,
                  direct: tuple[str, str] | None = None, ragged_m: bool = False) -> str:
    """A whole subgroup-matrix kernel: C (M x N) = A (M x K) B (K x N), tile by tile.

    declarations: the caller's bindings, `Params`, `load_a`, `load_b` and
    `store_c(row: u32, col: u32, value: f32)` (called for each C element inside M x N).
    setup: statements run per invocation before the first load (they may read `wid`,
    `m0`, `n0`, `tid`, the fixed columns `col_a`/`col_b` and set the caller's private
    variables). extent: WGSL expressions of
    M, N and K. aligned: the caller promises M, N, K are multiples of the tile's BM, BN, BK
    (its loads may then skip their bound checks); the epilogue skips its own.
    split: split K (a WGSL expression of the K steps per split, e.g. "params.split_steps"):
    workgroup z walks steps [z split, (z + 1) split) of K only (the last split the rest), its
    id in store_c as `split_id`; the caller sums the splits' partial results.
    parts: one A against `parts` Bs, each product into a C of its own, workgroup z choosing
    the pair: the caller declares `load_b_{i}` and `store_c_{i}` for each part i rather than
    load_b and store_c, and each part gets its own copy of the K loop and the epilogue behind
    one branch on wid.z (a uniform branch), so that no load or store chooses its buffer
    (a choice per load ran 1.9x slower on an H100: bench/NOTES.md, "q, k and v in one
    dispatch").
    pairs: C's columns come in halves per tile, the left half of each tile's BN columns
    pairing with the right (GEGLU's value and gate columns: the caller's load_b maps them);
    the caller declares `store_pair(row, col, left, right)` rather than store_c, called for
    row < M and col < N / 2, col counting the tile's left halves only (wid.x * BN / 2 + the
    column within the half). Needs an even WN: the left half's subgroups read their
    partners' (WN / 2 further) accumulators from workgroup memory.
    direct: (condition, store) for a `direct` tile (f16 accumulators into an f16 C the tile
    fills): where the uniform WGSL `condition` holds (the epilogue would leave the values as
    they are), each accumulator goes to C by the WGSL statement `store`, a template of
    `{row}`, `{col}` (the fragment's first element) and `{value}` (the accumulator), rather
    than through workgroup memory to store_c; a tile that is not `direct` ignores it. The
    store's offset must be uniform to Tint's analysis (subgroup matrices need it): lets
    of builtins and uniforms, not private variables (`tile_m0`, `tile_n0` hold m0, n0).
    ragged_m: with `aligned`, only N and K fill the tile, M may not: the epilogue checks rows
    alone, and a direct store runs only in workgroups whose tile lies inside M (the caller's
    load_a keeps its own reads inside A)."""
    k_total = extent[2]
    if pairs and (tile.wn % 2 or parts > 1 or split):
        raise ValueError(f"pairs need an even WN, no parts and no split (tile {tile.name})")
    if direct and (pairs or parts > 1):
        raise ValueError(f"a direct store takes one product without pairs (tile {tile.name})")
    a_decl, a_fetch, a_store = stage_code(a, tile)
    b_decl, b_fetch, b_store = stage_code(b, tile)
    nbuf = 2 if tile.double else 1
    size_a = a.staged(tile)[0] * a.stride(tile)
    size_b = b.staged(tile)[0] * b.stride(tile)
    acc = tile.acc
    accumulators = [f"  var c_{i}_{j}: subgroup_matrix_result<{acc}, 16, 16>;"
                    for i in range(tile.fm) for j in range(tile.fn)]
    columns = [f"  col_{op.name} = {op.origin()[1]} + tid % {op.staged(tile)[1] // op.width}u"
               f" * {op.width}u;" for op in (a, b) if op.fixed_column(tile)]
    nl = "\n"
    suffixes = [f"_{p}" for p in range(parts)] if parts > 1 else [""]
    fetches = [f"""fn fetch{x}() {{
{nl.join(a_fetch + [f.replace("load_b(", f"load_b{x}(") for f in b_fetch])}
}}""" for x in suffixes]
    puts = _put_functions(tile, suffixes, extent, aligned, pairs, ragged_m)
    multiply = multiply_code(tile, a, b)
    ragged_rows = extent[0] if ragged_m else ""

    def walk(x: str) -> str:
        """The K loop and the epilogue of the part that `x` suffixes."""
        return f"""{f"  fetch{x}();" if tile.prefetch or tile.double else ""}
{main_loop(tile, size_a, size_b, multiply, "k_first + " if split else "", f"fetch{x}")}
{_epilogue(tile, x, pairs, direct if tile.direct else None, ragged_rows)}"""

    if parts > 1:
        body = " else ".join(f"if (wid.z == {p}u) {{\n{walk(x)}\n}}"
                             for p, x in enumerate(suffixes))
    else:
        body = walk("")
    text = f"""enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
// Generated by gpustd/gemm/matrix_codegen.py ({comment}): tile {tile.name}.
{HALF8}
{declarations}

var<workgroup> sh_a: array<{tile.kind.word}, {size_a * nbuf}>;
var<workgroup> sh_b: array<{tile.kind.word}, {size_b * nbuf}>;
{"" if tile.c_in_staging else f"var<workgroup> sh_c: array<{acc}, {256 * tile.wm * tile.wn}>;"}
{nl.join(a_decl + b_decl)}
var<private> tid: u32;
var<private> m0: u32;
var<private> n0: u32;
var<private> k0: u32;
var<private> col_a: u32;
var<private> col_b: u32;
{"var<private> split_id: u32;" if split else ""}

{nl.join(fetches)}

fn stage(at_a: u32, at_b: u32) {{
{nl.join(a_store + b_store)}
}}

{nl.join(puts)}

@compute @workgroup_size({tile.threads})
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) local_index: u32,
        @builtin(subgroup_id) sg: u32,
        @builtin(subgroup_invocation_id) lane: u32) {{
  tid = local_index;
{_tile_origin(tile, extent)}
{nl.join(columns)}
{setup}
  let r_in = (sg / {tile.wn}u) * {16 * tile.fm}u;
  let c_in = (sg % {tile.wn}u) * {16 * tile.fn}u;
{nl.join(accumulators)}
{k_range(tile, k_total, split)}
{body}
}}
"""
    # the epilogue's fragments through the staging buffer where it holds them
    return re.sub(r"\bsh_c\b", "sh_a", text) if tile.c_in_staging else text


def _tile_origin(tile: MatrixTile, extent: tuple[str, str, str]) -> str:
    """WGSL setting m0, n0 of this workgroup: from wid.y, wid.x, or with `group` from bands
    of that many tile rows walked column by column (the last band's rows may be fewer),
    `tile_x` then the tile's column in wid.x's place."""
    if not tile.group:
        origin = f"  m0 = wid.y * {tile.bm}u;\n  n0 = wid.x * {tile.bn}u;"
    else:
        g = tile.group
        origin = f"""  let tiles_x = ({extent[1]} + {tile.bn - 1}u) / {tile.bn}u;
  let tiles_y = ({extent[0]} + {tile.bm - 1}u) / {tile.bm}u;
  let flat = wid.y * tiles_x + wid.x;
  let band_rows = min(tiles_y - flat / ({g}u * tiles_x) * {g}u, {g}u);
  let in_band = flat % ({g}u * tiles_x);
  let tile_x = in_band / band_rows;
  m0 = (flat / ({g}u * tiles_x) * {g}u + in_band % band_rows) * {tile.bm}u;
  n0 = tile_x * {tile.bn}u;"""
    if not tile.direct:
        return origin
    # a direct store's offsets must be uniform to Tint, which takes private variables as not
    return re.sub(r"^  ([mn]0) = (.*);$", r"  let tile_\1 = \2;\n  \1 = tile_\1;", origin,
                  flags=re.M)


def _put_functions(tile: MatrixTile, suffixes: list[str], extent: tuple[str, str, str],
                   aligned: bool, pairs: bool, ragged_m: bool = False) -> list[str]:
    """The epilogue's WGSL functions: a fragment staged in sh_c to the caller's store_c (one
    put_fragment per part that a suffix names), or with `pairs` a fragment and its partner's
    to store_pair; bound checks against M x N (N / 2 for pairs) unless `aligned`, against M
    alone where `aligned` and `ragged_m`. A lane's 8 elements: a loop from its lane index
    where the tile is `rolled`, else 8 iterations."""
    m_total, n_total = extent[:2]
    loop = ("for (var i = lane; i < 256u; i += 32u) {" if tile.rolled else
            "for (var e = 0u; e < 8u; e++) {\n    let i = lane + 32u * e;")
    rows_only = f"if (row < {m_total}) " if ragged_m else ""
    if pairs:
        check = rows_only if aligned else f"if (row < {m_total} && col < {n_total} / 2u) "
        return [f"""// 8 elements of one 16 x 16 fragment and its partner's per lane, to store_pair.
fn put_pair(row0: u32, col0: u32, at: u32, lane: u32) {{
  {loop}
    let row = row0 + i / 16u;
    let col = col0 + i % 16u;
    {check}{{ store_pair(row, col, f32(sh_c[at + i]), f32(sh_c[at + {128 * tile.wn}u + i])); }}
  }}
}}"""]
    inside = rows_only if aligned else f"if (row < {m_total} && col < {n_total}) "
    return [f"""// 8 elements of one 16 x 16 fragment per lane, to store_c{x} where inside M x N.
fn put_fragment{x}(row0: u32, col0: u32, at: u32, lane: u32) {{
  {loop}
    let row = row0 + i / 16u;
    let col = col0 + i % 16u;
    {inside}{{ store_c{x}(row, col, f32(sh_c[at + i])); }}
  }}
}}""" for x in suffixes]


def _epilogue(tile: MatrixTile, x: str, pairs: bool,
              direct: tuple[str, str] | None = None, m_total: str = "") -> str:
    """The epilogue of the part that `x` suffixes: each accumulator through sh_c (the
    subgroup's 256 elements) to its put function, between barriers; with `direct`
    (kernel_source's), straight to C where its condition holds and, given `m_total` (a
    ragged M), where the workgroup's tile lies inside M (a uniform test too)."""
    staged = _staged_epilogue(tile, x, pairs)
    if direct is None:
        return staged
    condition, store = direct
    if m_total:
        condition += f" && tile_m0 + {tile.bm}u <= {m_total}"
    stores = "\n".join("    " + store.format(row=f"tile_m0 + r_in + {16 * i}u",
                                                col=f"tile_n0 + c_in + {16 * j}u",
                                                value=f"c_{i}_{j}")
                       + ";" for i in range(tile.fm) for j in range(tile.fn))
    return f"  if ({condition}) {{\n{stores}\n  }} else {{\n{staged}\n  }}"


def _staged_epilogue(tile: MatrixTile, x: str, pairs: bool) -> str:
    """Each accumulator through sh_c (the subgroup's 256 elements) to its put function,
    between barriers."""
    put = [f"put_fragment{x}(m0 + r_in + {16 * i}u, n0 + c_in + {16 * j}u, sg * 256u, lane);"
           for i in range(tile.fm) for j in range(tile.fn)]
    column = "tile_x" if tile.group else "wid.x"
    if pairs:  # the left half's subgroups (sg % WN < WN / 2) store both halves
        put = [f"if (sg % {tile.wn}u < {tile.wn // 2}u) {{ put_pair(m0 + r_in + {16 * i}u, "
               f"{column} * {tile.bn // 2}u + c_in + {16 * j}u, sg * 256u, lane); }}"
               for i in range(tile.fm) for j in range(tile.fn)]
    return "\n".join(f"  subgroupMatrixStore(&sh_c, sg * 256u, c_{i}_{j}, false, 16u);\n"
                     f"  workgroupBarrier();\n  {put[i * tile.fn + j]}\n"
                     f"  workgroupBarrier();"
                     for i in range(tile.fm) for j in range(tile.fn))
