"""The GEMM variant's WGSL on the matrix units: the bindings, the global loads and C's store
of gpustd/gemm/matrix_units.py's kernel (C = alpha op(A) op(B) + beta C + bias, batched, split
K or several B/C parts), around the tile loop gpustd/gemm/matrix_codegen.py writes. Split from
matrix_units (which chooses tiles and records dispatches) as the code generator's own seam.
"""

from __future__ import annotations

import re

from .matrix_codegen import MatrixTile, Operand, contiguous_load, kernel_source, load_type

__all__ = ["source"]


_GEMM_PARAMS = """struct Params {
    m: u32, n: u32, k: u32,
    a_base: u32, a_outer: u32, a_inner: u32,
    b_base: u32, b_outer: u32, b_inner: u32,
    c_base: u32, inner: u32, z_base: u32,
    alpha: f32, beta: f32, has_bias: u32, split_steps: u32,
}"""

_STORE = """fn store_c(row: u32, col: u32, value: f32) {
  let idx = off_c + row * params.n + col;
  var v = params.alpha * value;
  if (params.beta != 0.0) { v += params.beta * f32(c[idx]); }
  if (params.has_bias == 1u) { v += f32(bias[col]); }
  if (params.has_bias == 2u) { v += f32(bias[row]); }
  c[idx] = f16(v);
}"""
# A split kernel's store: the same body into f32 slab `split_id`, dispatched with alpha 1,
# beta 0 and no bias (gpustd/gemm/portable.py's linalg/gemm_splitk adds the slabs and applies
# them; the body is kept so that every binding stays in use).
_STORE_SPLIT = _STORE.replace("c[idx] = f16(v);", "c[split_id * params.m * params.n + idx] = v;")
# A `direct` tile's store where _STORE would leave the f16 accumulators as is: the same bits
_DIRECT = ("params.alpha == 1.0 && params.beta == 0.0 && params.has_bias == 0u",
           "subgroupMatrixStore(&c, params.c_base + z * params.m * params.n + ({row}) * params.n"
           " + {col}, {value}, false, params.n)")  # off_c, from uniform values (kernel_source)
# A split kernel's direct store (f32 accumulators as they are, into split z's f32 slab): the
# raw sums _STORE_SPLIT writes, without the round trip through workgroup memory
_DIRECT_SPLIT = (_DIRECT[0], "subgroupMatrixStore(&c, wid.z * params.m * params.n + ({row}) * "
                 "params.n + {col}, {value}, false, params.n)")


def _direct(tile: MatrixTile, aligned: bool, split: bool,
            parts: int) -> tuple[str, str] | None:
    """kernel_source's `direct` (used by `direct` tiles alone): f16 accumulators into the f16
    C of an unsplit product, f32 ones into a split kernel's f32 slab; None where neither."""
    if not aligned or parts > 1:
        return None
    if split:
        return _DIRECT_SPLIT if tile.acc == "f32" else None
    return _DIRECT if tile.acc == "f16" else None


def _parts_code(parts: int, width_b: int, b_dims: tuple[str, str], checked: bool,
                store: str) -> str:
    """The extra bindings and each part's load_b_{i} and store_c_{i} (kernel_source's parts)
    of a kernel whose workgroup z picks the part: B and C in `parts` buffers each (b, b1, ...;
    c, c1, ...), A shared, and the parts' biases (has_bias 1) joined in `bias`, part i's at
    i * n. The bindings follow c and precede the params struct, as compile() lays them out."""
    extra = range(1, parts)
    kind = load_type(width_b)
    names = ["", *(str(i) for i in extra)]
    bindings = [f"@group(0) @binding({3 + i}) var<storage, read> b{i}: array<{kind}>;"
                for i in extra]
    bindings += [f"@group(0) @binding({2 + parts + i}) var<storage, read_write> c{i}: "
                 f"array<f16>;" for i in extra]
    loads = [contiguous_load(f"b_{i}", width_b, *b_dims, b_dims[1], "off_b", f"b{name}",
                             checked=checked) for i, name in enumerate(names)]
    stores = [store.replace("fn store_c(", f"fn store_c_{i}(").replace("c[idx]", f"c{name}[idx]")
              .replace("bias[col]", f"bias[{i}u * params.n + col]" if i else "bias[col]")
              for i, name in enumerate(names)]
    return "\n".join(bindings) + "\n\n" + "\n\n".join(loads + stores)


def _shape_note(dims: tuple[int | None, int, int] | None) -> str:
    """What the kernel's comment says of its shape."""
    if dims is None:
        return ""
    return f", aligned {dims}" if dims[0] else f", n {dims[1]} k {dims[2]} aligned, M ragged"


def source(tile: MatrixTile, trans_a: bool, trans_b: bool, width_a: int, width_b: int,
           dims: tuple[int | None, int, int] | None = None, split: bool = False,
           parts: int = 1) -> str:
    """The WGSL of one GEMM variant: C = alpha op(A) op(B) + beta C + bias (one per column,
    or with params.has_bias 2 one per row), batched over workgroup z (see
    record_gemm_matrix); width_*: f16 per global load of each operand.
    dims: (m, n, k) of a shape that fills the tile exactly: a kernel for that shape alone,
    without bound checks and with m, n, k as constants (its address arithmetic folds).
    (None, n, k): only M does not fill it (ragged M): n and k constants, m a uniform, no
    check on B's loads, A's row (its column where A is transposed) clamped to the last one
    rather than checked (the rows it computes past M are never stored), C's rows checked,
    and the `direct` store kept for the workgroups whose tile lies inside M; for rows < M
    the same sums in the same order as the checked kernel (dims None), so the same bits.
    split: one matrix, K split over workgroup z (params.split_steps K steps each), the raw
    f32 sums of split z in slab z of `c` (f32 [splits, m, n]).
    parts: one A against `parts` B matrices in buffers of their own, each product into a C
    of its own (record_gemm_parts), workgroup z choosing the pair, part i's bias at i * n of
    `bias`; no batch."""
    aligned = dims is not None
    ragged_m = dims is not None and dims[0] is None
    a = Operand("a", trans_a, width_a)
    b = Operand("b", not trans_b, width_b)
    a_dims = ("params.k", "params.m") if trans_a else ("params.m", "params.k")
    b_dims = ("params.n", "params.k") if trans_b else ("params.k", "params.n")
    load_b = contiguous_load("b", width_b, *b_dims, b_dims[1], "off_b", checked=not aligned)
    store = _STORE_SPLIT if split else _STORE
    more_bindings = ""
    if parts > 1:
        more_bindings = _parts_code(parts, width_b, b_dims, not aligned, store)
        load_b = store = ""  # each part's load_b_{i} and store_c_{i} take their place
    declarations = f"""{_GEMM_PARAMS}
@group(0) @binding(0) var<storage, read> a: array<{load_type(width_a)}>;
@group(0) @binding(1) var<storage, read> b: array<{load_type(width_b)}>;
@group(0) @binding(2) var<storage, read> bias: array<f16>;
@group(0) @binding(3) var<storage, read_write> c: array<{"f32" if split else "f16"}>;
{more_bindings}
@group(0) @binding({2 + 2 * parts}) var<uniform> params: Params;
var<private> off_a: u32;
var<private> off_b: u32;
var<private> off_c: u32;


{contiguous_load("a", width_a, *a_dims, a_dims[1], "off_a", checked=not aligned,
                 clamp=("col" if trans_a else "row") if ragged_m else "")}

{load_b}

{store}"""
    z = "0u" if split or parts > 1 else "wid.z"
    setup = f"""  let z = {z} + params.z_base;
  let outer = z / params.inner;
  let inner = z % params.inner;
  off_a = params.a_base + outer * params.a_outer + inner * params.a_inner;
  off_b = params.b_base + outer * params.b_outer + inner * params.b_inner;
  off_c = params.c_base + z * params.m * params.n;"""
    text = kernel_source(tile, a, b, declarations=declarations, setup=setup,
                         extent=("params.m", "params.n", "params.k"),
                         comment=f"GEMM, trans_a={trans_a}, trans_b={trans_b}"
                                 + _shape_note(dims)
                                 + (", split K" if split else "")
                                 + (f", {parts} parts" if parts > 1 else ""), aligned=aligned,
                         ragged_m=ragged_m,
                         split="params.split_steps" if split else "", parts=parts,
                         direct=_direct(tile, aligned, split, parts))
    if dims is None:
        return text
    values = {name: value for name, value in zip("mnk", dims) if value is not None}
    return re.sub(rf"params\.([{''.join(values)}])\b", lambda hit: f"{values[hit.group(1)]}u",
                  text)
