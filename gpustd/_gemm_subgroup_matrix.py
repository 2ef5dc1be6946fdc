"""f16 GEMM on the matrix units (tensor cores): WGSL `chromium_experimental_subgroup_matrix`
(Dawn), f16 operands, f32 accumulation. gpustd._gemm routes f16 GEMMs here when the device
has a matching subgroup-matrix config (f16 x f16 -> f32, 16x16x16, subgroups of 32).

The WGSL is generated, not read from shaders/: a subgroup's FM x FN accumulators and its
fragments must be named variables (an array of matrices indexed in a loop goes to local
memory), so the code is unrolled per tile shape. naga cannot parse the extension, which is
one more reason it stays out of shaders/ (every file there compiles on every adapter).

A workgroup of WM x WN subgroups computes a (16 FM WM) x (16 FN WN) tile of C. Per K step
of BK, the operands' tiles are staged in workgroup memory (zero-filled outside the matrix,
so ragged M, N, K need no special case; vec4 loads where the contiguous dimension allows),
the next step's global loads in flight while the current one multiplies. A transposed
operand is staged as stored and loaded column-major. The epilogue goes through workgroup
memory a fragment at a time: alpha * acc + beta * C + bias, rounded to f16, bounds-checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gpucore import Buffer, Device, Kernel

__all__ = ["SMTile", "available", "choose_tile", "record_gemm_sm", "source"]

_PAD = 8  # f16 elements added to each staged row: rows stay 16-byte aligned, banks rotate


@dataclass(frozen=True)
class SMTile:
    """WM x WN subgroups of FM x FN 16x16 fragments; K steps of BK (16, 32 or 64)."""

    fm: int
    fn: int
    wm: int
    wn: int
    bk: int = 32
    # Two staging buffers, one barrier per K step instead of two. H100, Dawn's default
    # toggles: slower (4096^3 46 against 78 TFLOP/s); with disable_robustness about even.
    # (Fragments loaded straight from storage, without staging, measured slower still:
    # 39-53 TFLOP/s at 4096^3; and Dawn's robustness moves a fragment that crosses the end of
    # a buffer as a whole, so ragged edges came out wrong.)
    double: bool = False

    @property
    def bm(self) -> int:
        return 16 * self.fm * self.wm

    @property
    def bn(self) -> int:
        return 16 * self.fn * self.wn

    @property
    def threads(self) -> int:
        return 32 * self.wm * self.wn

    def shared_bytes(self) -> int:
        a = self.bm * (self.bk + _PAD)
        b = self.bk * (self.bn + _PAD)  # either layout has the same size within the pad
        return 2 * (max(a, self.bk * (self.bm + _PAD)) + max(b, self.bn * (self.bk + _PAD))) \
            + 4 * 256 * self.wm * self.wn


TILES = {"128x128": SMTile(4, 2, 2, 4), "64x64": SMTile(2, 2, 2, 2)}


def available(device: Device) -> bool:
    """Whether `device` multiplies f16 16x16x16 fragments into f32 on subgroups of 32."""
    info = device.info
    config = getattr(info, "matrix_config", lambda *a: None)("f16", "f32", 16, 16, 16)
    return (config is not None and "subgroup" in device.features and device.has_f16
            and config.min_subgroup_size in (0, 32) and config.max_subgroup_size in (0, 32))


def choose_tile(m: int, n: int, batch: int) -> SMTile:
    """128 x 128 tiles for products of 4 waves or more, 64 x 64 below. Measured on an H100
    (Dawn, default toggles; 2026-11-23): 4096^3 78 against 73 TFLOP/s; the UNet's
    4096 x 640 x 640, 1024 x 1280 x 1280, 4096 x 1280 x 320: 64 x 64 at 48-51 TFLOP/s, 128 x 128
    at 40-45; 64 x 128, 128 x 64, 4 x 4 fragments per subgroup and BK 16/64 were slower."""
    tiles = math.ceil(m / 128) * math.ceil(n / 128) * batch
    return TILES["128x128"] if tiles >= 4 * 132 else TILES["64x64"]


@dataclass(frozen=True)
class _Operand:
    """How one operand's K-step tile is staged: R x C in global memory with C contiguous."""

    name: str  # "a" or "b"
    rows: int
    cols: int
    vec: bool
    row0: str  # WGSL expressions: first global row / column of the tile,
    col0: str
    rows_total: str  # the matrix's extent
    cols_total: str
    ld: str  # elements between rows


def _stage_code(op: _Operand, threads: int) -> tuple[list[str], list[str], list[str]]:
    """(private declarations, fetch statements, store statements) for one operand."""
    width = 4 if op.vec else 1
    per_row = op.cols // width
    count = op.rows * per_row
    if count % threads:
        raise ValueError(f"{op.name} tile {op.rows}x{op.cols} does not split over {threads}")
    stride = op.cols + _PAD
    kind = "vec4<f16>" if op.vec else "f16"
    decls, fetch, store = [], [], []
    for q in range(count // threads):
        reg = f"r{op.name}{q}"
        decls.append(f"var<private> {reg}: {kind};")
        fetch.append(f"  {{ let v = tid + {q * threads}u; let r = v / {per_row}u; "
                     f"let c = (v % {per_row}u) * {width}u;\n"
                     f"    let gr = {op.row0} + r; let gc = {op.col0} + c;\n"
                     f"    {reg} = {kind}();\n"
                     f"    if (gr < {op.rows_total} && gc < {op.cols_total}) {{ "
                     f"{reg} = {op.name}[(off_{op.name} + gr * {op.ld} + gc) / {width}u]; }} }}")
        at = f"at_{op.name} + (tid + {q * threads}u) / {per_row}u * {stride}u + " \
             f"(tid + {q * threads}u) % {per_row}u * {width}u"
        if op.vec:
            store.append(f"  {{ let s = {at}; sh_{op.name}[s] = {reg}.x; "
                         f"sh_{op.name}[s + 1u] = {reg}.y; sh_{op.name}[s + 2u] = {reg}.z; "
                         f"sh_{op.name}[s + 3u] = {reg}.w; }}")
        else:
            store.append(f"  sh_{op.name}[{at}] = {reg};")
    return decls, fetch, store


def source(tile: SMTile, trans_a: bool, trans_b: bool, vec_a: bool, vec_b: bool) -> str:
    """The WGSL of one kernel variant (see the module docstring)."""
    fm, fn, bk, threads = tile.fm, tile.fn, tile.bk, tile.threads
    bm, bn = tile.bm, tile.bn
    a = (_Operand("a", bk, bm, vec_a, "k0", "m0", "params.k", "params.m", "params.m")
         if trans_a else
         _Operand("a", bm, bk, vec_a, "m0", "k0", "params.m", "params.k", "params.k"))
    b = (_Operand("b", bn, bk, vec_b, "n0", "k0", "params.n", "params.k", "params.k")
         if trans_b else
         _Operand("b", bk, bn, vec_b, "k0", "n0", "params.k", "params.n", "params.n"))
    a_decl, a_fetch, a_store = _stage_code(a, threads)
    b_decl, b_fetch, b_store = _stage_code(b, threads)
    sa, sb = a.cols + _PAD, b.cols + _PAD
    left = "subgroup_matrix_left<f16, 16, 16>"
    right = "subgroup_matrix_right<f16, 16, 16>"
    result = "subgroup_matrix_result<f32, 16, 16>"
    lines = [f"  var c_{i}_{j}: {result};" for i in range(fm) for j in range(fn)]
    blocks: list[str] = []  # one block per 16-deep K fragment: its fragments are block-local
    for kk in range(0, bk, 16):
        mma: list[str] = []
        for i in range(fm):
            # left fragment: rows (m) r_in + 16 i, columns (k) kk
            at = (f"{kk}u * {sa}u + r_in + {16 * i}u" if trans_a
                  else f"(r_in + {16 * i}u) * {sa}u + {kk}u")
            mma.append(f"let a{i} = subgroupMatrixLoad<{left}>(&sh_a, cur_a + {at}, "
                       f"{'true' if trans_a else 'false'}, {sa}u);")
        for j in range(fn):
            at = (f"(c_in + {16 * j}u) * {sb}u + {kk}u" if trans_b
                  else f"{kk}u * {sb}u + c_in + {16 * j}u")
            mma.append(f"let b{j} = subgroupMatrixLoad<{right}>(&sh_b, cur_b + {at}, "
                       f"{'true' if trans_b else 'false'}, {sb}u);")
        mma += [f"c_{i}_{j} = subgroupMatrixMultiplyAccumulate(a{i}, b{j}, c_{i}_{j});"
                for i in range(fm) for j in range(fn)]
        blocks.append("    {\n" + "\n".join("      " + x for x in mma) + "\n    }")
    body = "\n".join(blocks)
    epilogue = []
    for i in range(fm):
        for j in range(fn):
            epilogue.append(f"  subgroupMatrixStore(&sh_c, sg * 256u, c_{i}_{j}, false, 16u);\n"
                            f"  workgroupBarrier();\n"
                            f"  put_fragment(m0 + r_in + {16 * i}u, n0 + c_in + {16 * j}u, "
                            f"sg * 256u, lane, c_off);\n"
                            f"  workgroupBarrier();")
    nbuf = 2 if tile.double else 1
    size_a, size_b = a.rows * sa, b.rows * sb
    if tile.double:
        main_loop = f"""  stage(0u, 0u);
  workgroupBarrier();
  for (var t = 0u; t < steps; t++) {{
    let cur_a = (t & 1u) * {size_a}u;
    let cur_b = (t & 1u) * {size_b}u;
    k0 = (t + 1u) * {bk}u;
    if (t + 1u < steps) {{ fetch(); }}
{body}
    if (t + 1u < steps) {{ stage({size_a}u - cur_a, {size_b}u - cur_b); }}
    workgroupBarrier();
  }}"""
    else:
        main_loop = f"""  for (var t = 0u; t < steps; t++) {{
    stage(0u, 0u);
    workgroupBarrier();
    let cur_a = 0u;
    let cur_b = 0u;
    k0 = (t + 1u) * {bk}u;
    if (t + 1u < steps) {{ fetch(); }}
{body}
    workgroupBarrier();
  }}"""
    a_kind = "vec4<f16>" if vec_a else "f16"
    b_kind = "vec4<f16>" if vec_b else "f16"
    nl = "\n"
    return f"""enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
// Generated by gpustd/_gemm_subgroup_matrix.py: tile {bm}x{bn}, BK {bk}, {tile.wm}x{tile.wn}
// subgroups of {fm}x{fn} fragments, trans_a={trans_a}, trans_b={trans_b}.
struct Params {{
    m: u32, n: u32, k: u32,
    a_base: u32, a_outer: u32, a_inner: u32,
    b_base: u32, b_outer: u32, b_inner: u32,
    c_base: u32, inner: u32, z_base: u32,
    alpha: f32, beta: f32, has_bias: u32,
}}
@group(0) @binding(0) var<storage, read> a: array<{a_kind}>;
@group(0) @binding(1) var<storage, read> b: array<{b_kind}>;
@group(0) @binding(2) var<storage, read> bias: array<f16>;
@group(0) @binding(3) var<storage, read_write> c: array<f16>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> sh_a: array<f16, {a.rows * sa * nbuf}>;
var<workgroup> sh_b: array<f16, {b.rows * sb * nbuf}>;
var<workgroup> sh_c: array<f32, {256 * tile.wm * tile.wn}>;
{nl.join(a_decl + b_decl)}
var<private> tid: u32;
var<private> off_a: u32;
var<private> off_b: u32;
var<private> m0: u32;
var<private> n0: u32;
var<private> k0: u32;

fn fetch() {{
{nl.join(a_fetch + b_fetch)}
}}

fn stage(at_a: u32, at_b: u32) {{
{nl.join(a_store + b_store)}
}}

// 8 elements of one 16 x 16 f32 fragment per lane: alpha * acc + beta * C + bias -> f16.
fn put_fragment(row0: u32, col0: u32, at: u32, lane: u32, c_off: u32) {{
  for (var e = 0u; e < 8u; e++) {{
    let i = lane + 32u * e;
    let row = row0 + i / 16u;
    let col = col0 + i % 16u;
    if (row < params.m && col < params.n) {{
      let idx = c_off + row * params.n + col;
      var v = params.alpha * sh_c[at + i];
      if (params.beta != 0.0) {{ v += params.beta * f32(c[idx]); }}
      if (params.has_bias != 0u) {{ v += f32(bias[col]); }}
      c[idx] = f16(v);
    }}
  }}
}}

@compute @workgroup_size({threads})
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) local_index: u32,
        @builtin(subgroup_id) sg: u32,
        @builtin(subgroup_invocation_id) lane: u32) {{
  let z = wid.z + params.z_base;
  let outer = z / params.inner;
  let inner = z % params.inner;
  tid = local_index;
  off_a = params.a_base + outer * params.a_outer + inner * params.a_inner;
  off_b = params.b_base + outer * params.b_outer + inner * params.b_inner;
  m0 = wid.y * {bm}u;
  n0 = wid.x * {bn}u;
  let r_in = (sg / {tile.wn}u) * {16 * fm}u;
  let c_in = (sg % {tile.wn}u) * {16 * fn}u;
{nl.join(lines)}
  let steps = (params.k + {bk - 1}u) / {bk}u;
  k0 = 0u;
  fetch();
{main_loop}
  let c_off = params.c_base + z * params.m * params.n;
{nl.join(epilogue)}
}}
"""


_kernels: dict[tuple, Kernel] = {}


def _kernel(tile: SMTile, trans_a: bool, trans_b: bool, vec_a: bool, vec_b: bool) -> Kernel:
    key = (tile, trans_a, trans_b, vec_a, vec_b)
    found = _kernels.get(key)
    if found is None:
        found = _kernels[key] = Kernel(source(*key), name="linalg/gemm_subgroup_matrix")
    return found


def record_gemm_sm(a: Buffer[Any], b: Buffer[Any], c: Buffer[Any], bias: Buffer[Any], *,
                   has_bias: bool, m: int, n: int, k: int, trans_a: bool, trans_b: bool,
                   alpha: float, beta: float, plan: Any, tile: SMTile | None = None) -> None:
    """Record C = alpha op(A) op(B) + beta C + bias (f16, f32 accumulation) for every batch
    entry of `plan` (a gpustd._gemm.BatchPlan) on the matrix units. No validation: the
    caller (gpustd._gemm.record_gemm) has done it; `bias` is a placeholder when not has_bias.
    """
    device = c.device
    tile = tile or choose_tile(m, n, plan.count)
    # vec4 reads need every row start of the contiguous dimension 16-byte aligned.
    offsets_a = (plan.outer_strides[0], plan.inner_strides[0], *(g[0] for g in plan.groups))
    offsets_b = (plan.outer_strides[1], plan.inner_strides[1], *(g[1] for g in plan.groups))
    vec_a = (m if trans_a else k) % 4 == 0 and all(o % 4 == 0 for o in offsets_a)
    vec_b = (k if trans_b else n) % 4 == 0 and all(o % 4 == 0 for o in offsets_b)
    kernel = _kernel(tile, trans_a, trans_b, vec_a, vec_b)
    per_group = plan.outer * plan.inner
    max_z = device.limits["max-compute-workgroups-per-dimension"]
    grid_xy = (math.ceil(n / tile.bn), math.ceil(m / tile.bm))
    for g, (a_base, b_base) in enumerate(plan.groups):
        for z_base in range(0, per_group, max_z):
            kernel.dispatch(
                (*grid_xy, min(max_z, per_group - z_base)), a, b, bias, c,
                m=m, n=n, k=k,
                a_base=a_base, a_outer=plan.outer_strides[0], a_inner=plan.inner_strides[0],
                b_base=b_base, b_outer=plan.outer_strides[1], b_inner=plan.inner_strides[1],
                c_base=g * per_group * m * n, inner=plan.inner, z_base=z_base,
                alpha=alpha, beta=beta, has_bias=int(has_bias),
            )
