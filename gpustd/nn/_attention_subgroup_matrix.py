"""Flash attention for float16 on the matrix units (tensor cores): WGSL
`chromium_experimental_subgroup_matrix` (Dawn), f16 q, k, v, f32 accumulators, online softmax
in f32. gpustd.nn.attention routes f16 calls without mask or causal here when `available`.

A workgroup of SG subgroups takes BQ = 16 FQ SG query rows of one (batch, head); a subgroup
owns 16 FQ rows, its q fragments held in registers. Keys and values stream through workgroup
memory BK = 16 FK at a time (zero-filled past Lk and past D, which is padded to a multiple of
16). Per tile: S = q k^T on the matrix units; S goes through workgroup memory
(subgroupMatrixStore) where two lanes per row take the row max and sum in f32 (base 2: log2 e
is folded into the scale) and write P = exp2(S - m) back as f16, loaded as a left matrix for
O += P v. The running max m is raised only when a tile's max exceeds it by more than 8
(FlashAttention-4's lazy rescaling: P stays <= 2^8, exact in f16's range), and only then are
the O fragments rescaled, through workgroup memory; the decision is made uniform across the
workgroup with workgroupUniformLoad, as matrix operations must be.

As in gpustd/gemm/matrix_units.py the WGSL is generated: matrices are named variables
(an array of matrices indexed in a loop goes to local memory) and every matrix load/store
offset is built from constants and the subgroup id only (Tint requires uniform offsets).
Two quirks measured on an H100 with Dawn (wgpudawn 0.32.0.4): a matrix `var` declared in a
loop without an initializer is not zeroed per iteration (so every one is initialized with
the zero constructor), and with a 4-byte workgroup variable (a u32 flag) beside the arrays,
matrix loads/stores saw the arrays 4 bytes away from where scalar accesses put them (so every
workgroup variable here is a multiple of 16 bytes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpucore import Device, Kernel

from ..gemm import matrix_units

__all__ = ["SMPlan", "available", "choose_plan", "record_attention_sm", "source", "supports"]

_LOG2E = 1.4426950408889634
_LEFT = "subgroup_matrix_left<f16, 16, 16>"
_RIGHT = "subgroup_matrix_right<f16, 16, 16>"
_RESULT = "subgroup_matrix_result<f32, 16, 16>"
_PAD_F16 = 8  # elements that end each staged f16 row / f32 row (16 bytes)
_PAD_F32 = 4


@dataclass(frozen=True)
class SMPlan:
    """SG subgroups of FQ 16-row query fragments; key tiles of FK 16-key fragments; head dim
    D (padded to DP). Strides: every staged row ends with pad elements so that rows stay
    16-byte aligned (what the matrix loads want) while banks rotate."""

    d: int
    fq: int = 2
    fk: int = 2
    sg: int = 4

    @property
    def dp(self) -> int:
        return 16 * math.ceil(self.d / 16)

    @property
    def bq(self) -> int:
        return 16 * self.fq * self.sg

    @property
    def bk(self) -> int:
        return 16 * self.fk

    @property
    def threads(self) -> int:
        return 32 * self.sg

    @property
    def strides(self) -> tuple[int, int, int]:
        """(staged q/k/v row, S row (f32), P row) strides in elements."""
        return self.dp + _PAD_F16, self.bk + _PAD_F32, self.bk + _PAD_F16

    def kv_elements(self) -> int:
        return max(self.bq, 2 * self.bk) * self.strides[0]  # q first, then k and v

    def shared_bytes(self) -> int:
        _, ss, ps = self.strides
        rows = 16 * self.fq * self.sg
        return 2 * self.kv_elements() + 4 * rows * ss + 2 * rows * ps + 4 * rows + 16


def available(device: Device) -> bool:
    """Whether `device` has the matrix units this kernel needs (f16 x f16 -> f32 16x16x16
    fragments on subgroups of 32: the matrix-unit GEMM's requirement)."""
    return matrix_units.available(device)


def choose_plan(d: int, lq: int, lk: int, batch_heads: int, device: Device) -> SMPlan | None:
    """The tile plan for one call (the autotuner's hook: everything shape-dependent is
    decided here), or None where the portable kernel is the faster one or nothing fits.

    The plans in order of preference, and D > 96 left to the portable kernel, are an H100
    sweep's findings (tools/attention_sm_sweep.py; bench/NOTES.md, "Calibration tables
    moved out of docstrings")."""
    budget = device.limits["max-compute-workgroup-storage-size"]
    if 16 * math.ceil(d / 16) > 96:
        return None
    wanted = [SMPlan(d, 1, 2, 8), SMPlan(d, 1, 1, 8), SMPlan(d, 1, 2, 4), SMPlan(d, 1, 1, 4)]
    fits = [p for p in wanted if p.shared_bytes() <= budget]
    return fits[0] if fits else None


def supports(d: int, lq: int, lk: int, batch_heads: int, device: Device) -> bool:
    """Whether record_attention_sm can run this call: a plan fits and the grid does."""
    plan = choose_plan(d, lq, lk, batch_heads, device)
    limit = device.limits["max-compute-workgroups-per-dimension"]
    return plan is not None and batch_heads <= limit and math.ceil(lq / plan.bq) <= limit


def _stage(plan: SMPlan, src: str, dst: str, rows: int, row0: str, length: str,
           base: str, stride: str) -> str:
    """Copy `rows` rows of `src` (row r at base + (row0 + r) * stride) into sh_kv at `dst`,
    zero past `length` rows and past D columns; vec4 reads when D allows them."""
    st = plan.strides[0]
    width = 4 if plan.d % 4 == 0 else 1
    per_row = plan.dp // width
    read = (f"{src}[(({base}) + gr * {stride} + col) / 4u]" if width == 4
            else f"{src}[({base}) + gr * {stride} + col]")
    kind = "vec4<f16>" if width == 4 else "f16"
    put = "".join(f" sh_kv[ix + {i}u] = x{'.' + 'xyzw'[i] if width == 4 else ''};"
                  for i in range(width))
    return f"""  for (var e = tid; e < {rows * per_row}u; e += {plan.threads}u) {{
    let r = e / {per_row}u; let col = (e % {per_row}u) * {width}u; let gr = {row0} + r;
    var x = {kind}();
    if (gr < {length} && col < {plan.d}u) {{ x = {read}; }}
    let ix = {dst} + r * {st}u + col;{put}
  }}"""


def _through_scratch(plan: SMPlan, lane_code: Callable[[int, int, int], str],
                     reload: bool) -> list[str]:
    """Code that moves the O fragments through this subgroup's S scratch, FK fragments at a
    time, with `lane_code(i, n, c0)` (row fragment i, n columns from column c0; a lane
    works on its own rows) between barriers; `reload` loads them back."""
    ss = plan.strides[1]
    lines = []
    for c0 in range(0, plan.dp // 16, plan.fk):
        chunk = range(c0, min(c0 + plan.fk, plan.dp // 16))
        for i in range(plan.fq):
            lines += [f"  subgroupMatrixStore(&sh_s, sbase + {16 * i * ss + 16 * (c - c0)}u, "
                      f"o_{i}_{c}, false, {ss}u);" for c in chunk]
        lines.append("  workgroupBarrier();")
        lines += [lane_code(i, 16 * len(chunk), 16 * c0) for i in range(plan.fq)]
        lines.append("  workgroupBarrier();")
        if reload:
            for i in range(plan.fq):
                lines += [f"  o_{i}_{c} = subgroupMatrixLoad<{_RESULT}>(&sh_s, "
                          f"sbase + {16 * i * ss + 16 * (c - c0)}u, false, {ss}u);"
                          for c in chunk]
    return lines


def source(plan: SMPlan) -> str:
    """The WGSL of one plan (see the module docstring)."""
    fq, fk, nd = plan.fq, plan.fk, plan.dp // 16
    st, ss, ps = plan.strides
    rows = 16 * fq
    q_regs = [f"  let q_{i}_{c} = subgroupMatrixLoad<{_LEFT}>(&sh_kv, "
              f"qbase + {16 * i * st + 16 * c}u, false, {st}u);"
              for i in range(fq) for c in range(nd)]
    scores = []
    for j in range(fk):
        body = [f"var s_{i} = {_RESULT}();" for i in range(fq)]
        for c in range(nd):
            body.append(f"let k_{c} = subgroupMatrixLoad<{_RIGHT}>(&sh_kv, "
                        f"{16 * j * st + 16 * c}u, true, {st}u);")
            body += [f"s_{i} = subgroupMatrixMultiplyAccumulate(q_{i}_{c}, k_{c}, s_{i});"
                     for i in range(fq)]
        body += [f"subgroupMatrixStore(&sh_s, sbase + {16 * i * ss + 16 * j}u, s_{i}, false, "
                 f"{ss}u);" for i in range(fq)]
        scores.append("    {\n" + "\n".join("      " + x for x in body) + "\n    }")
    products = []
    for j in range(fk):
        body = [f"let p_{i} = subgroupMatrixLoad<{_LEFT}>(&sh_p, pbase + {16 * i * ps + 16 * j}u,"
                f" false, {ps}u);" for i in range(fq)]
        for c in range(nd):
            body.append(f"let v_{c} = subgroupMatrixLoad<{_RIGHT}>(&sh_kv, "
                        f"{(plan.bk + 16 * j) * st + 16 * c}u, false, {st}u);")
            body += [f"o_{i}_{c} = subgroupMatrixMultiplyAccumulate(p_{i}, v_{c}, o_{i}_{c});"
                     for i in range(fq)]
        products.append("    {\n" + "\n".join("      " + x for x in body) + "\n    }")
    softmax = []
    for i in range(fq):
        softmax.append(f"""    {{
      let s_at = sbase + (row + {16 * i}u) * {ss}u;
      var top = -3.0e38;
      for (var j = 0u; j < {plan.bk // 2}u; j++) {{
        let col = 2u * j + side;
        if (k0 + col < params.lk) {{ top = max(top, sh_s[s_at + col] * params.scale); }}
      }}
      top = max(top, subgroupShuffleXor(top, 1u));
      alpha_{i} = 1.0;
      if (top > m_{i} + 8.0) {{
        if (m_{i} > -3.0e38) {{ rescale[0] = 1u; }}
        alpha_{i} = exp2(m_{i} - top);
        l_{i} *= alpha_{i};
        m_{i} = top;
      }}
      let p_at = pbase + (row + {16 * i}u) * {ps}u;
      for (var j = 0u; j < {plan.bk // 2}u; j++) {{
        let col = 2u * j + side;
        var p = 0.0;
        if (k0 + col < params.lk) {{ p = exp2(sh_s[s_at + col] * params.scale - m_{i}); }}
        l_{i} += p;
        sh_p[p_at + col] = f16(p);
      }}
    }}""")
    def scale_rows(i: int, n: int, c0: int) -> str:
        return f"""  for (var j = 0u; j < {n // 2}u; j++) {{
    let e = sbase + (row + {16 * i}u) * {ss}u + 2u * j + side;
    sh_s[e] *= alpha_{i};
  }}"""

    def write_rows(i: int, n: int, c0: int) -> str:
        return f"""  for (var e = lane; e < {16 * n}u; e += 32u) {{
    let r = {16 * i}u + e / {n}u; let col = {c0}u + e % {n}u; let gr = q0 + sg * {rows}u + r;
    if (gr < params.lq && col < {plan.d}u) {{
      let o = sh_s[sbase + r * {ss}u + e % {n}u] * sh_inv[sg * {rows}u + r];
      out[o_base + gr * params.o_sl + col] = f16(o);
    }}
  }}"""

    rescale = _through_scratch(plan, scale_rows, True)
    finish = _through_scratch(plan, write_rows, False)
    nl = "\n"
    state = [f"  var m_{i} = -3.0e38;{nl}  var l_{i} = 0.0;{nl}  var alpha_{i} = 1.0;"
             for i in range(fq)]
    o_decl = [f"  var o_{i}_{c} = {_RESULT}();" for i in range(fq) for c in range(nd)]
    inv = [f"  l_{i} += subgroupShuffleXor(l_{i}, 1u);{nl}"
           f"  if (side == 0u) {{ sh_inv[sg * {rows}u + row + {16 * i}u] = "
           f"select(0.0, 1.0 / l_{i}, l_{i} > 0.0); }}" for i in range(fq)]
    io_kind = "vec4<f16>" if plan.d % 4 == 0 else "f16"
    return f"""enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
// Generated by gpustd/nn/_attention_subgroup_matrix.py: D {plan.d} (padded {plan.dp}),
// {plan.sg} subgroups x {16 * fq} query rows, key tiles of {plan.bk}.
struct Params {{
    lq: u32, lk: u32, heads: u32, scale: f32,
    q_sb: u32, q_sh: u32, q_sl: u32,
    k_sb: u32, k_sh: u32, k_sl: u32,
    v_sb: u32, v_sh: u32, v_sl: u32,
    o_sb: u32, o_sh: u32, o_sl: u32,
}}
@group(0) @binding(0) var<storage, read> q: array<{io_kind}>;
@group(0) @binding(1) var<storage, read> k: array<{io_kind}>;
@group(0) @binding(2) var<storage, read> v: array<{io_kind}>;
@group(0) @binding(3) var<storage, read_write> out: array<f16>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> sh_kv: array<f16, {plan.kv_elements()}>;
var<workgroup> sh_s: array<f32, {plan.sg * rows * ss}>;
var<workgroup> sh_p: array<f16, {plan.sg * rows * ps}>;
var<workgroup> sh_inv: array<f32, {plan.bq}>;
var<workgroup> rescale: array<u32, 4>; // 16 bytes, like every workgroup variable here

@compute @workgroup_size({plan.threads})
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) tid: u32,
        @builtin(subgroup_id) sg: u32,
        @builtin(subgroup_invocation_id) lane: u32) {{
  let batch = wid.y / params.heads;
  let head = wid.y % params.heads;
  let q0 = wid.x * {plan.bq}u;
  let q_base = batch * params.q_sb + head * params.q_sh;
  let k_base = batch * params.k_sb + head * params.k_sh;
  let v_base = batch * params.v_sb + head * params.v_sh;
  let o_base = batch * params.o_sb + head * params.o_sh;
  let qbase = sg * {rows * st}u;
  let sbase = sg * {rows * ss}u;
  let pbase = sg * {rows * ps}u;
  let row = lane / 2u; // two lanes per row of each 16-row fragment, alternate columns
  let side = lane % 2u;
{_stage(plan, "q", "0u", plan.bq, "q0", "params.lq", "q_base", "params.q_sl")}
  workgroupBarrier();
{nl.join(q_regs)}
{nl.join(state)}
{nl.join(o_decl)}
  let tiles = (params.lk + {plan.bk - 1}u) / {plan.bk}u;
  for (var t = 0u; t < tiles; t++) {{
    let k0 = t * {plan.bk}u;
    workgroupBarrier();
    if (tid == 0u) {{ rescale[0] = 0u; }}
{_stage(plan, "k", "0u", plan.bk, "k0", "params.lk", "k_base", "params.k_sl")}
{_stage(plan, "v", f"{plan.bk * st}u", plan.bk, "k0", "params.lk", "v_base", "params.v_sl")}
    workgroupBarrier();
{nl.join(scores)}
    workgroupBarrier();
{nl.join(softmax)}
    if (workgroupUniformLoad(&rescale[0]) != 0u) {{
{nl.join("  " + x for x in rescale)}
    }}
{nl.join(products)}
  }}
{nl.join(inv)}
{nl.join(finish)}
}}
"""


def _kernel(plan: SMPlan) -> Kernel:
    return Kernel.generated("nn/attention_subgroup_matrix", source, plan)


def record_attention_sm(q: Any, k: Any, v: Any, out: Any, *, shape: tuple[int, ...],
                        strides: tuple[tuple[int, int, int], ...], scale: float,
                        plan: SMPlan | None = None) -> None:
    """Record out = softmax(q k^T scale) v for f16 q, k, v (Tensors or Buffers) on the
    matrix units. shape: (B, H, Lq, Lk, D); strides: the (batch, head, row) element strides
    of q, k, v and out (the last dim contiguous). No validation: gpustd.nn.attention has done
    it and asked `supports`; `plan` overrides choose_plan (for tuning)."""
    b, h, lq, lk, d = shape
    device = out.device
    plan = plan or choose_plan(d, lq, lk, b * h, device)
    if plan is None:
        raise ValueError(f"attention: no subgroup-matrix plan fits head dim {d}; "
                         "check supports() first")
    names = ("q", "k", "v", "o")
    fields = {f"{n}_s{x}": s for n, st in zip(names, strides) for x, s in zip("bhl", st)}
    _kernel(plan).dispatch((math.ceil(lq / plan.bq), b * h), q, k, v, out, lq=lq, lk=lk,
                           heads=h, scale=float(scale) * _LOG2E, **fields)
