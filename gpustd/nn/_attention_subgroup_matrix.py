"""Flash attention for float16 on the matrix units (tensor cores): WGSL
`chromium_experimental_subgroup_matrix` (Dawn), f16 q, k, v, f32 accumulators, online softmax
in f32. gpustd.nn.attention routes f16 calls here when `available`, without causal and with
no mask or a key mask (SMPlan.mask: one bias a batch, head and key, added to the scores).

A workgroup of SG subgroups takes BQ = 16 FQ SG query rows of one (batch, head); a subgroup
owns 16 FQ rows, its q fragments held in registers (with a split, SPLIT subgroups share 16 FQ
rows and divide S's key fragments and O's head-dim columns between them: SMPlan). Keys and
values stream through workgroup memory BK = 16 FK at a time (zero-filled past Lk and past D,
which is padded to a multiple of 16). Per tile: S = q k^T on the matrix units; S goes through
workgroup memory (subgroupMatrixStore) where two lanes per row (2 SPLIT with a split) take
the row max and sum in f32 (base 2: log2 e is folded into the scale) and write
P = exp2(S - m) back as f16, loaded as a left matrix for O += P v. The running max m is
raised only when a tile's max exceeds it by more than SMPlan.headroom, 15 in choose_plan's
plans (FlashAttention-4's lazy rescaling: P stays <= 2^15, within f16's range), and only
then are the O fragments rescaled, through workgroup memory; the decision is made uniform
across the workgroup with workgroupUniformLoad, as matrix operations must be.

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

import dataclasses
import functools
import math
from typing import Any

from gpucore import Device, Kernel

from ..gemm import matrix_units
from ._attention_sm_plan import (
    RESULT,
    SMPlan,
    fetch_rows,
    key_bias,
    lean_softmax,
    masked_softmax,
    raise_max,
    row_shuffles,
    softmax_in_registers,
    stage_q_passes,
    stage_rows,
    through_scratch,
)

__all__ = ["SMPlan", "available", "choose_plan", "record_attention_sm", "source", "supports"]

_LOG2E = 1.4426950408889634
_LEFT = "subgroup_matrix_left<f16, 16, 16>"
_RIGHT = "subgroup_matrix_right<f16, 16, 16>"


def _add(a: str, b: str) -> str:
    return f"{a} + {b}"


def available(device: Device) -> bool:
    """Whether `device` has the matrix units this kernel needs (f16 x f16 -> f32 16x16x16
    fragments on subgroups of 32: the matrix-unit GEMM's requirement)."""
    return matrix_units.available(device)


def choose_plan(d: int, lq: int, lk: int, batch_heads: int, device: Device,
                mask: int = 0) -> SMPlan | None:
    """The tile plan for one call (the autotuner's hook: everything shape-dependent is
    decided here), or None where the portable kernel is the faster one or nothing fits;
    `mask`: SMPlan.mask (a key mask's bias tile must fit beside the rest).

    Measured on an H100 (Dawn, 2026-11-24, tools/attention_sm_sweep.py,
    bench/results/attention-sm-prefetch-dawn-h100.json; GPU ms): with the next K/V tile
    prefetched and the scores read once into registers, 4 subgroups of 16 rows and 32-key
    tiles are the fastest at D 40, 64 and 160 (SD 1.5 self 4096 d40: 0.903, was 1.507 with
    8 subgroups unprefetched; SDXL 4096 d64: 1.326, was 2.237; SD 1.5 256 d160: 0.0545 against
    the portable kernel's 0.0623). With the lean softmax (2026-11-26,
    attention-lean-dawn-h100.json) they are at D 80 too: 0.121 against 8 subgroups' 0.133;
    SD 1.5 4096 d40 0.802 against 0.844 without it, SDXL 4096 d64 1.087 against 1.129.
    Rows 8-15 rotated (`rotate`) gave 0.792 and 1.078 alone (4.58 against 3.97 at FLUX's D
    128; attention-lean-4096-dawn-h100.json, attention-lean-joint-dawn-h100.json), but the
    SD 1.5 step's 32 attention calls took 5.04-5.08 ms with it up to D 64 against 4.93
    without (unet-f16-vec4-norm-dawn-h100.json, unet-f16-lean-dawn-h100.json): not taken.
    At D 128 (the DiTs' joint attention: FLUX, Z-Image, Qwen-Image) 16 subgroups split two
    to a row group (`SMPlan.split`: 128 query rows a workgroup, half the K/V traffic, half
    the output fragments a subgroup): FLUX 1x24x4608 2.83-2.85 ms against 3.94-3.98,
    Z-Image 1x30x4224 3.02-3.04 against 4.30-4.35 (attention-d128-split-dawn-h100.json,
    attention-d128-stagger-notkept-dawn-h100.json); at D 64 splits did not win (SDXL 4096:
    1.108 with 8 subgroups split two, 1.261 with 16, against 1.095). The four-subgroup
    plan takes its softmax columns in runs (`runs`; 2026-11-26, H200, Dawn,
    tools/attention_step_ab.py, attention-runs-step-sd15-dawn-h200.json): the SD 1.5
    step's 32 attention calls 4.93 -> 4.72 ms, the replayed step 26.51-26.61 -> 26.35-26.37
    ms GPU in every round (isolated: SD 1.5 4096 d40 0.802 -> 0.752, SDXL 4096 d64 1.087 ->
    1.022; attention-runs-dawn-h100.json).
    Every plan raises a row's max only past headroom 15 (2026-11-27, H100, Dawn,
    attention-headroom-*-dawn-h100.json): where later keys score higher (the sweep's ramp)
    FLUX 1x24x4608 2.836 -> 2.228 ms, Z-Image 3.01 -> 2.335, SD 1.5 4096 d40 0.752 -> 0.676,
    SDXL 4096 d64 1.024 -> 0.908; on keys of one scale and in a random-weight FLUX step
    (bitwise the same output) no change; errors against float64 4.3e-4 to 4.7e-4 (headroom
    8: 4.1e-4 to 5.3e-4; torch fp16 2.9e-4 to 3.1e-4).
    At D 64 (SDXL, SD 3.5) eight subgroups split two (64 query rows, 24 KiB) since
    2026-11-27 (H100, Dawn; tools/attention_step_ab.py, attention-step-d64split-*-dawn-h100.json):
    SD 3.5 Large's replayed step 428 -> 419 ms wall (its 38 attention calls 146.7 -> 138.1
    ms), SDXL's 118.8 -> 116.1 (140 calls 20.7 -> 18.7), every one of three rounds; isolated
    SDXL 4096 0.907 -> 0.879, SD 3.5 1x38x4429 2.012 -> 1.930 (attention-pingpong-dawn-h100.json).
    At D 96 (Lumina 2's 24 heads of 2304) the D 128 split plan too since 2026-11-29 (H200,
    Dawn; tools/attention_sm_sweep.py --only lumina2, attention-d96-lumina2-dawn-h200.json):
    1x24x4188 3.515 -> 1.570 ms (1x2x12 split 1.744, 2x2x8 split 1.576, SDPA fp16 0.468), the
    same error against float64 (4.4e-4).
    At D 256 (AuraFlow's 12 and Ideogram 4's 18 heads) eight subgroups split two (64 query
    rows, 47.5 KiB: the one split plan that fits 48 KiB) since 2026-11-30 (H200, Dawn;
    tools/attention_sm_sweep.py --only auraflow,ideogram4, attention-d256-dawn-h200.json):
    AuraFlow 1x12x4360 2.76 ms GPU against the two-GEMM path's 4.60 (and its copies from the
    (B, L, H*D) layout), Ideogram 4 1x18x4396 4.01 against 6.95; the four-subgroup plans
    (1x2x4pslu 4.63, 1x1x4psl 4.46) no faster than the GEMMs; SDPA fp16 0.54 and 0.66. Errors
    against float64 4.7e-4 to 5.5e-4 (the two-GEMM path 4.1e-4 to 5.2e-4, torch fp16 2.6e-4
    to 3.3e-4). Other head dims over 160 stay off the matrix units (not measured)."""
    return _plan_for(d, device.limits["max-compute-workgroup-storage-size"],
                     device.limits.get("max-compute-invocations-per-workgroup", 256), mask)


@functools.lru_cache(maxsize=256)  # every eager attention call asks; the plans are frozen
def _plan_for(d: int, budget: int, invocations: int, mask: int) -> SMPlan | None:
    dp = 16 * math.ceil(d / 16)
    if dp == 256:
        wide = SMPlan(d, 1, 2, 8, prefetch=True, regs=True, lean=True, split=2, headroom=15,
                      mask=mask)
        return wide if wide.shared_bytes() <= budget and wide.threads <= invocations else None
    if dp > 160:
        return None
    wanted = [SMPlan(d, 1, 2, 4, prefetch=True, regs=True, lean=True, runs=True),
              SMPlan(d, 1, 1, 8, prefetch=True, rotate=True, regs=True, lean=True),
              SMPlan(d, 1, 1, 4, prefetch=True, regs=True, lean=True)]
    if dp in (96, 128):
        wanted.insert(0, SMPlan(d, 1, 2, 16, prefetch=True, regs=True, lean=True, split=2))
    if dp == 64:
        wanted.insert(0, SMPlan(d, 1, 2, 8, prefetch=True, regs=True, lean=True, split=2))
    plans = [dataclasses.replace(p, headroom=15, mask=mask) for p in wanted]
    fits = [p for p in plans if p.shared_bytes() <= budget and p.threads <= invocations]
    return fits[0] if fits else None


def supports(d: int, lq: int, lk: int, batch_heads: int, device: Device, mask: int = 0) -> bool:
    """Whether record_attention_sm can run this call (with a key mask of kind `mask`,
    SMPlan.mask): a plan fits and the grid does."""
    plan = choose_plan(d, lq, lk, batch_heads, device, mask)
    limit = device.limits["max-compute-workgroups-per-dimension"]
    return plan is not None and batch_heads <= limit and math.ceil(lq / plan.bq) <= limit


def source(plan: SMPlan) -> str:
    """The WGSL of one plan (see the module docstring)."""
    fq, fk, nd = plan.fq, plan.fk, plan.dp // 16
    st, ss, ps = plan.strides
    rows = 16 * fq
    split = plan.split
    # a split's subgroup (row group rg, column group cg): its key fragments at kbase (S at
    # scol), its head-dim columns at vbase; without one, sg is the row group
    group, kbase, vbase, scol = ("sg", "", "", "sbase") if split == 1 else (
        "rg", "kbase + ", "vbase + ", "scol")
    if plan.q_width < plan.dp:
        q_regs = stage_q_passes(plan, _LEFT)
    else:
        q_regs = [f"  let q_{i}_{c} = subgroupMatrixLoad<{_LEFT}>(&sh_kv, "
                  f"qbase + {16 * i * st + 16 * c}u, false, {st}u);"
                  for i in range(fq) for c in range(nd)]
        q_regs = [stage_rows(plan, "q", "0u", plan.bq, "q0", "params.lq", "q_base",
                             "params.q_sl"), "  workgroupBarrier();", *q_regs]
    scores = []
    for j in range(fk // split):
        body = [f"var s_{i} = {RESULT}();" for i in range(fq)]
        for c in range(nd):
            body.append(f"let k_{c} = subgroupMatrixLoad<{_RIGHT}>(&sh_kv, "
                        f"{kbase}{16 * j * st + 16 * c}u, true, {st}u);")
            body += [f"s_{i} = subgroupMatrixMultiplyAccumulate(q_{i}_{c}, k_{c}, s_{i});"
                     for i in range(fq)]
        body += [f"subgroupMatrixStore(&sh_s, {scol} + {16 * i * ss + 16 * j}u, s_{i}, false, "
                 f"{ss}u);" for i in range(fq)]
        scores.append("    {\n" + "\n".join("      " + x for x in body) + "\n    }")
    products = []
    for j in range(fk):
        body = [f"let p_{i} = subgroupMatrixLoad<{_LEFT}>(&sh_p, pbase + {16 * i * ps + 16 * j}u,"
                f" false, {ps}u);" for i in range(fq)]
        for c in range(nd // split):
            body.append(f"let v_{c} = subgroupMatrixLoad<{_RIGHT}>(&sh_kv, "
                        f"{vbase}{(plan.bk + 16 * j) * st + 16 * c}u, false, {st}u);")
            body += [f"o_{i}_{c} = subgroupMatrixMultiplyAccumulate(p_{i}, v_{c}, o_{i}_{c});"
                     for i in range(fq)]
        products.append("    {\n" + "\n".join("      " + x for x in body) + "\n    }")
    softmax = []
    bias = " + sh_bias[col]" if plan.mask else ""
    column = (f"2u * ((j + row / 8u) % {plan.bk // 2}u) + side" if plan.rotate
              else "2u * j + side")
    for i in range(fq):
        if plan.regs:
            kind = (masked_softmax if plan.mask else lean_softmax if plan.lean
                    else softmax_in_registers)
            softmax.append(kind(plan, i))
            continue
        raised = "\n".join("      " + x for x in raise_max(i, headroom=plan.headroom))
        softmax.append(f"""    {{
      let s_at = sbase + (row + {16 * i}u) * {ss}u;
      var top = -3.0e38;
      for (var j = 0u; j < {plan.bk // 2}u; j++) {{
        let col = {column};
        if (k0 + col < params.lk) {{ top = max(top, sh_s[s_at + col] * params.scale{bias}); }}
      }}
      top = max(top, subgroupShuffleXor(top, 1u));
{raised}
      let p_at = pbase + (row + {16 * i}u) * {ps}u;
      for (var j = 0u; j < {plan.bk // 2}u; j++) {{
        let col = {column};
        var p = 0.0;
        if (k0 + col < params.lk) {{ p = exp2(sh_s[s_at + col] * params.scale{bias} - m_{i}); }}
        l_{i} += p;
        sh_p[p_at + col] = f16(p);
      }}
    }}""")
    # the O moves: without a split the softmax's lanes (their rows' alpha_i in registers);
    # with one, two lanes a row of the subgroup's own fragments, alpha from sh_alpha
    orow, oside = ("row", "side") if split == 1 else ("orow", "oside")

    def scale_rows(i: int, n: int, c0: int) -> str:
        alpha = f"alpha_{i}" if split == 1 else f"sh_alpha[srow0 + {orow} + {16 * i}u]"
        return f"""  for (var j = 0u; j < {n // 2}u; j++) {{
    let e = {scol} + ({orow} + {16 * i}u) * {ss}u + 2u * j + {oside};
    sh_s[e] *= {alpha};
  }}"""

    def write_rows(i: int, n: int, c0: int) -> str:
        return f"""  for (var e = lane; e < {16 * n}u; e += 32u) {{
    let r = {16 * i}u + e / {n}u; let col = {vbase}{c0}u + e % {n}u; """ + \
            f"""let gr = q0 + {group} * {rows}u + r;
    if (gr < params.lq && col < {plan.d}u) {{
      let o = sh_s[{scol} + r * {ss}u + e % {n}u] * sh_inv[{group} * {rows}u + r];
      out[o_base + gr * params.o_sl + col] = f16(o);
    }}
  }}"""

    rescale = through_scratch(plan, scale_rows, True)
    # a masked plan's key bias: invocation tid holds key tid of a tile (prefetched with k, v)
    bias_in = f"if (tid < {plan.bk}u) {{ "
    bias_fetch = ([], [], []) if not plan.mask else (
        ["  var pf_bias = 0.0;"], [f"      {bias_in}pf_bias = key_bias(m_base, kn + tid); }}"],
        [f"    {bias_in}sh_bias[tid] = pf_bias; }}"])
    if plan.prefetch:
        fetches = [fetch_rows(plan, "k", "k", "0u", plan.bk, "k0", "params.lk", "k_base",
                          "params.k_sl"),
                   fetch_rows(plan, "v", "v", f"{plan.bk * st}u", plan.bk, "k0", "params.lk",
                          "v_base", "params.v_sl"), bias_fetch]
        loads = [x for f in fetches for x in f[1]]
        prefetch_decl = "\n".join([x for f in fetches for x in f[0]]
                                   + ["  {", "    let kn = 0u;", *loads, "  }"])
        staging = "\n".join(x for f in fetches for x in f[2])
        next_fetch = "\n".join(["    if (t + 1u < tiles) {", f"      let kn = k0 + {plan.bk}u;",
                                 *loads, "    }"])
    else:
        prefetch_decl = next_fetch = ""
        staging = (stage_rows(plan, "k", "0u", plan.bk, "k0", "params.lk", "k_base", "params.k_sl")
                   + "\n" + stage_rows(plan, "v", f"{plan.bk * st}u", plan.bk, "k0", "params.lk",
                                    "v_base", "params.v_sl"))
        if plan.mask:
            staging += f"\n    {bias_in}sh_bias[tid] = key_bias(m_base, k0 + tid); }}"
    mask_fn = mask_fields = mask_binding = bias_decl = m_base = ""
    if plan.mask:
        mask_fn = key_bias(plan)
        mask_fields = "\n    m_sb: u32, m_sh: u32, m_sk: u32,"
        mask_binding = ("@group(0) @binding(4) var<storage, read> mask: "
                        f"array<{'f32' if plan.mask == 1 else 'u32'}>;\n")
        bias_decl = f"var<workgroup> sh_bias: array<f32, {plan.bk}>;\n"
        m_base = "\n  let m_base = batch * params.m_sb + head * params.m_sh;"
    finish = through_scratch(plan, write_rows, False)
    nl = "\n"
    state = [f"  var m_{i} = -3.0e38;{nl}  var l_{i} = 0.0;{nl}  var alpha_{i} = 1.0;"
             for i in range(fq)]
    o_decl = [f"  var o_{i}_{c} = {RESULT}();" for i in range(fq) for c in range(nd // split)]
    inv = ["".join(f"  {x}{nl}" for x in row_shuffles(plan, f"l_{i}", _add))
           + f"  l_{i} += subgroupShuffleXor(l_{i}, {plan.lanes_per_row // 2}u);{nl}"
           f"  if (side == 0u) {{ sh_inv[{group} * {rows}u + row + {16 * i}u] = "
           f"select(0.0, 1.0 / l_{i}, l_{i} > 0.0); }}" for i in range(fq)]
    if split == 1:
        bases = f"""  let qbase = sg * {rows * st}u;
  let sbase = sg * {rows * ss}u;
  let pbase = sg * {rows * ps}u;
  let row = lane / 2u; // two lanes per row of each 16-row fragment, alternate columns
  let side = lane % 2u;"""
    else:
        lanes = plan.lanes_per_row
        bases = f"""  let rg = sg / {split}u; // row group: {split} subgroups share its rows
  let cg = sg % {split}u; // this subgroup's share of the key fragments and head dim
  let qbase = rg * {rows * (plan.q_width + 8)}u;
  let sbase = rg * {rows * ss}u;
  let pbase = rg * {rows * ps}u;
  let kbase = cg * {16 * (fk // split) * st}u;
  let vbase = cg * {16 * (nd // split)}u;
  let scol = sbase + cg * {16 * (fk // split)}u;
  let srow0 = rg * {rows}u;
  let row = cg * {16 // split}u + lane / {lanes}u; // {lanes} lanes a softmax row
  let side = lane % {lanes}u;
  let srow = srow0 + row;
  let orow = lane / 2u;
  let oside = lane % 2u;"""
    alpha_decl = (f"var<workgroup> sh_alpha: array<f32, {plan.bq}>;{nl}" if split > 1
                  else "") + bias_decl
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
    o_sb: u32, o_sh: u32, o_sl: u32,{mask_fields}
}}
@group(0) @binding(0) var<storage, read> q: array<{io_kind}>;
@group(0) @binding(1) var<storage, read> k: array<{io_kind}>;
@group(0) @binding(2) var<storage, read> v: array<{io_kind}>;
@group(0) @binding(3) var<storage, read_write> out: array<f16>;
{mask_binding}@group(0) @binding({5 if plan.mask else 4}) var<uniform> params: Params;

var<workgroup> sh_kv: array<f16, {plan.kv_elements()}>;
var<workgroup> sh_s: array<f32, {plan.bq * ss}>;
var<workgroup> sh_p: array<f16, {plan.bq * ps}>;
var<workgroup> sh_inv: array<f32, {plan.bq}>;
{alpha_decl}var<workgroup> rescale: array<u32, 4>; // 16 bytes, like every workgroup variable here
{mask_fn}
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
  let o_base = batch * params.o_sb + head * params.o_sh;{m_base}
{bases}
{nl.join(q_regs)}
{nl.join(state)}
{nl.join(o_decl)}
  let tiles = (params.lk + {plan.bk - 1}u) / {plan.bk}u;
{prefetch_decl}
  for (var t = 0u; t < tiles; t++) {{
    let k0 = t * {plan.bk}u;
    workgroupBarrier();
    if (tid == 0u) {{ rescale[0] = 0u; }}
{staging}
    workgroupBarrier();
{next_fetch}
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
                        strides: tuple[tuple[int, ...], ...], scale: float,
                        plan: SMPlan | None = None,
                        mask: tuple[Any, int, tuple[int, int, int]] | None = None) -> None:
    """Record out = softmax(q k^T scale + mask) v for f16 q, k, v (Tensors or Buffers) on
    the matrix units. shape: (B, H, Lq, Lk, D); strides: the (batch, head, row) element
    strides of q, k, v and out (the last dim contiguous). `mask`: a key mask (one bias a
    batch, head and key, the same for every query row) as (f32 or u32 buffer, kind 1
    additive or 2 boolean, its (batch, head, key) element strides, 0 where broadcast).
    No validation: gpustd.nn.attention has done it and asked `supports`; `plan` overrides
    choose_plan (for tuning)."""
    b, h, lq, lk, d = shape
    device = out.device
    kind = mask[1] if mask else 0
    plan = dataclasses.replace(plan, mask=kind) if plan else choose_plan(d, lq, lk, b * h,
                                                                          device, kind)
    if plan is None:
        raise ValueError(f"attention: no subgroup-matrix plan fits head dim {d}; "
                         "check supports() first")
    if plan.lean and scale <= 0 and not plan.mask:  # its row max is max(s) * scale
        plan = dataclasses.replace(plan, lean=False)
    names = ("q", "k", "v", "o")
    fields: dict[str, Any] = {f"{n}_s{x}": s for n, st in zip(names, strides)
                              for x, s in zip("bhl", st)}
    buffers = [q, k, v, out]
    if mask:
        buffers.append(mask[0])
        fields.update(zip(("m_sb", "m_sh", "m_sk"), mask[2]))
    _kernel(plan).dispatch((math.ceil(lq / plan.bq), b * h), *buffers, lq=lq, lk=lk,
                           heads=h, scale=float(scale) * _LOG2E, **fields)
