"""A lab for f16 GEMM kernels on Dawn's subgroup matrices, beside torch fp16 in one process.

    source .gpu/prelude.sh && [LAB_TOGGLES=disable_robustness] [LAB_BUDGET=240] \\
        python3 tools/matrix_gemm_lab.py OUT.json [NAME-FILTER]

Standalone on purpose: it writes WGSL by hand for aligned shapes (M, N, K multiples of the
tile; no bound checks) to find what the kernel's data path costs, without gpucore's runtime
in between. Variants (`name()`): `g` loads fragments straight from global memory (no
workgroup memory, no barriers); `s` stages each K step in workgroup memory (4 f16 per global
load; options pf = next step's loads in flight during the multiplies, db = two staging
buffers, tb = nt's B staged transposed, w8 = 8 f16 per load, ep16 = f16 C through workgroup
memory like gpustd's epilogue; otherwise f32 C stored straight from the fragments); `p` is
gpustd's own kernel (gemm/matrix_units.source) timed by the same timer. Each variant is
checked against float64 on a 384 x 320 x 640 product (nn and nt), then timed on SHAPES: the
median wall time per dispatch of a submit of back-to-back dispatches (~20 ms a sample; not
timestamp queries, which tools/sm_sweep.py uses for gpustd's kernels), torch by CUDA events.

What it found on an H100 (2026-11-24, bench/results/f16-gemm-lab-dawn-h100.json; TFLOP/s at
4096^3 nt/nn, default toggles; cuBLAS 700-730):
  s 64x128 (2x2 subgroups of 2x4 fragments, BK 32)       133 / 146-153  (ep16: 108-120 / 132)
  s 64x64 (2x2 of 2x2)                                   112 / 124
  p 64x128 aligned (what gpustd ships) / checked          91 / 104      /  63 / 68
  g straight from global memory, best (128x128 2x2 4x4)  56 / 72;  2x4 fragments 37 / 54
  slower than plain `s`: pf, db (33), tb, w8, BK 16 or 64, pad 0 or 16, staging through
  subgroup-matrix loads/stores (67-111 with disable_robustness, which adds 10-30% to `s`).
Second round (H100, 2026-11-24, f16-gemm-lab-bigtiles-raster-dawn-h100.json, same columns):
  s 64x128 134.8 / 156.8; with sw8 (the grid walked 8 tile rows at a time) 136.4 / 156.7 and
  52.9 -> 69.1 at 4096x640x640; 128x128 (4x2 subgroups) 104.5 / 107.9; 64x256 98.0 / 109.6;
  128x256 (16 subgroups of 2x4, 512 threads) 125.9 / 129.2, sw8 142.8 / 131.2. Bigger tiles
  do not pay: the staging's scalar f16 stores and barriers grow with the tile. The same
  8-row walk in gpustd's kernels changed nothing there (sm_sweep: 106.8 / 91.0, 47.0 at
  4096x640x640 against 103.1 / 92.1, 46-58 without), so it was not kept.
The first round's figures came from the session's working copy of this lab (the same
kernels, before this file was tidied; device time ran out before this copy itself was
re-run on the GPU).
Third round (H200, 2026-11-29, robustness off, f16-gemm-lab-{global,hybrid,hybrid-checked}-
dawn-h200.json; 4096^3 nt TFLOP/s, cuBLAS 744-759): `acc16` (f16 accumulators and C), `h`
(A staged, B's fragments straight from the storage buffer), `bt` (B stored pre-tiled, each
16 x 16 fragment 512 contiguous bytes), `bf` (h's B loads issued before A's staging):
  s 256x256 4x4sg 4x4fr acc16 (the shipped flow)          289-294
  g 128x128 acc16 / + bt; g 256x256 acc16 / + bt          75 / 143-145; 68 / 127
  h 256x256 acc16 / + bt / + bt bf                        84 / 137 / 118-119
  h 128x128 (f32) / + bt / + bt bf; s 128x128             42 / 80 / 66-67; 147-149
Fragments loaded from global memory stay 2-4x slower than staged ones without Dawn's
robustness too, even 512 contiguous bytes a fragment: not a way past the staging.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np

L = "subgroup_matrix_left<f16, 16, 16>"
R = "subgroup_matrix_right<f16, 16, 16>"
ACC = "subgroup_matrix_result<f32, 16, 16>"
HEAD = "enable f16;\nenable subgroups;\nenable chromium_experimental_subgroup_matrix;\n"
# m, k, n, layout ("nt": B stored n x k, a linear layer's weight)
SHAPES = [(4096, 4096, 4096, "nt"), (4096, 4096, 4096, "nn"), (4096, 640, 640, "nt"),
          (1024, 1280, 1280, "nt"), (4096, 1280, 320, "nt"), (4096, 320, 1280, "nt"),
          (8192, 320, 320, "nt")]
CHECK = [(512, 320, 768, "nt"), (512, 320, 768, "nn")]  # 256-row tiles divide it


def G(fm: int, fn: int, wm: int, wn: int, **kw: Any) -> dict[str, Any]:
    return dict(kind="g", fm=fm, fn=fn, wm=wm, wn=wn, **kw)


def S(fm: int, fn: int, wm: int, wn: int, **kw: Any) -> dict[str, Any]:
    return dict(kind="s", fm=fm, fn=fn, wm=wm, wn=wn, **kw)


def P(fm: int, fn: int, wm: int, wn: int, **kw: Any) -> dict[str, Any]:
    return dict(kind="p", fm=fm, fn=fn, wm=wm, wn=wn, **kw)


def H(fm: int, fn: int, wm: int, wn: int, **kw: Any) -> dict[str, Any]:
    """A staged in workgroup memory, B's fragments straight from the storage buffer (nt)."""
    return dict(kind="h", fm=fm, fn=fn, wm=wm, wn=wn, **kw)


VARIANTS = [S(4, 4, 4, 4, acc16=True), G(4, 4, 2, 2, acc16=True, bt=True),
            G(4, 4, 4, 4, acc16=True, bt=True), H(4, 4, 4, 4, acc16=True),
            H(4, 4, 4, 4, acc16=True, bt=True), H(4, 4, 4, 4, acc16=True, bt=True, bf=True),
            H(2, 4, 4, 2), H(2, 4, 4, 2, bt=True), H(2, 4, 4, 2, bt=True, bf=True),
            H(4, 4, 4, 2, acc16=True, bt=True), S(2, 4, 4, 2)]
# Earlier rounds' lists: S(2, 4, 2, 2), S(2, 4, 2, 2, sw=8), S(2, 4, 4, 2, sw=8), S(2, 4, 2, 4),
# S(2, 4, 4, 4), S(2, 4, 4, 4, sw=8), S(2, 4, 4, 4, ep16=True), S(2, 4, 2, 2, ep16=True),
# P(2, 4, 2, 2, prefetch=False); before them
# The last round's list (its results in the docstring above): S(2, 4, 2, 2, ep16=True),
# P(2, 4, 2, 2, prefetch=False, checked=True), S(2, 2, 2, 2), P(2, 2, 2, 2), S(.., pf=True),
# S(.., db=True), S(.., tb=True), S(.., w8=True), S(.., ku=4), S(4, 2, 2, 4), G(2, 4, 2, 2),
# G(4, 4, 2, 2), G(2, 4, 2, 2, ku=2).


def name(v: dict[str, Any]) -> str:
    """e.g. "s 64x128 2x2sg 2x4fr bk32 ep16": kind, tile, subgroups, fragments, K step."""
    bk = 16 * v.get("ku", 1 if v["kind"] == "g" else 2)
    flags = [f for f in ("pf", "db", "tb", "w8", "ep16", "acc16", "bt", "bf", "checked")
             if v.get(f)]
    flags += [f"sw{v['sw']}"] if v.get("sw") else []
    flags += ["np"] if v.get("prefetch") is False else []
    return " ".join([v["kind"], f"{16 * v['fm'] * v['wm']}x{16 * v['fn'] * v['wn']}",
                     f"{v['wm']}x{v['wn']}sg", f"{v['fm']}x{v['fn']}fr", f"bk{bk}", *flags])


def _bindings(a_type: str, c_type: str, b_type: str = "") -> str:
    return (f"@group(0) @binding(0) var<storage, read> A: array<{a_type}>;\n"
            f"@group(0) @binding(1) var<storage, read> B: array<{b_type or a_type}>;\n"
            f"@group(0) @binding(2) var<storage, read_write> C: array<{c_type}>;\n")


def _global_b(v: dict[str, Any], name: str, kk: str, j: int, n: int, k: int,
              layout: str) -> str:
    """B's fragment j at K offset kk straight from the storage buffer; with bt, B is stored
    pre-tiled (nt only): each 16 x 16 block (16 rows of N, 16 of K) contiguous, blocks K-major
    within a block row, so a fragment is 512 contiguous bytes."""
    if v.get("bt"):
        return (f"let {name} = subgroupMatrixLoad<{R}>(&B, ((col0 / 16u + {j}u) * {k // 16}u + "
                f"({kk}) / 16u) * 256u, true, 16u);")
    if layout == "nn":
        return (f"let {name} = subgroupMatrixLoad<{R}>(&B, ({kk}) * {n}u + col0 + {16 * j}u,"
                f" false, {n}u);")
    return (f"let {name} = subgroupMatrixLoad<{R}>(&B, (col0 + {16 * j}u) * {k}u + {kk},"
            f" true, {k}u);")


def global_source(v: dict[str, Any], m: int, n: int, k: int, layout: str) -> str:
    """Fragments loaded from the storage buffers each K step: no workgroup memory."""
    fm, fn, ku = v["fm"], v["fn"], v.get("ku", 1)
    lines = []
    for u in range(ku):
        kk = f"k + {16 * u}u"
        lines += [f"let a{u}_{i} = subgroupMatrixLoad<{L}>(&A, (row0 + {16 * i}u) * {k}u + {kk},"
                  f" false, {k}u);" for i in range(fm)]
        lines += [_global_b(v, f"b{u}_{j}", kk, j, n, k, layout) for j in range(fn)]
    lines += [f"c_{i}_{j} = subgroupMatrixMultiplyAccumulate(a{u}_{i}, b{u}_{j}, c_{i}_{j});"
              for u in range(ku) for i in range(fm) for j in range(fn)]
    return _kernel(v, n, "f16", "", "\n".join(
        [f"  for (var k = 0u; k < {k}u; k += {16 * ku}u) {{"] + ["    " + x for x in lines]
        + ["  }"]), "row0", "col0")


def staged_source(v: dict[str, Any], m: int, n: int, k: int, layout: str) -> str:
    """Each K step's A and B tiles staged in workgroup memory, fragments loaded from there."""
    fm, fn, wm, wn, ku = v["fm"], v["fn"], v["wm"], v["wn"], v.get("ku", 2)
    bk, bm, bn, threads, pad = 16 * ku, 16 * fm * wm, 16 * fn * wn, 32 * wm * wn, 8
    width = 8 if v.get("w8") else 4
    gtype = "vec4<u32>" if width == 8 else "vec4<f16>"
    b_kmajor = layout == "nn" or bool(v.get("tb"))  # B staged [BK][BN]
    sa, sb = bk + pad, (bn + pad) if b_kmajor else (bk + pad)
    size_a, size_b = bm * sa, (bk if b_kmajor else bn) * sb
    decl, fetch, store = [], [], []

    def parts(x: str) -> list[str]:
        if width == 4:
            return [f"{x}.{c}" for c in "xyzw"]
        return [f"bitcast<vec2<f16>>({x}.{c})[{h}]" for c in "xyzw" for h in (0, 1)]

    def operand(op: str, rows: int, cols: int, load: str, put: str) -> None:
        per = cols // width
        for q in range(0, rows * per, threads):
            reg, at = f"r{op}{q // threads}", f"let e = tid + {q}u; let r = e / {per}u; " \
                                              f"let c = (e % {per}u) * {width}u;"
            decl.append(f"  var {reg}: {gtype};")
            fetch.append(f"{{ {at} {reg} = {load}; }}")
            store.append(f"{{ {at} " + " ".join(put.format(i=i, x=x) for i, x in
                                                enumerate(parts(reg))) + " }")

    operand("a", bm, bk, f"A[((m0 + r) * {k}u + kf + c) / {width}u]",
            f"sa[s0 + r * {sa}u + c + {{i}}u] = {{x}};")
    hybrid = v["kind"] == "h"
    if hybrid:
        size_b = 16  # unused
    elif layout == "nn":
        operand("b", bk, bn, f"B[((kf + r) * {n}u + n0 + c) / {width}u]",
                f"sb[t0 + r * {sb}u + c + {{i}}u] = {{x}};")
    else:
        operand("b", bn, bk, f"B[((n0 + r) * {k}u + kf + c) / {width}u]",
                f"sb[t0 + (c + {{i}}u) * {sb}u + r] = {{x}};" if b_kmajor else
                f"sb[t0 + r * {sb}u + c + {{i}}u] = {{x}};")
    body = []
    for u in range(ku):
        body += [f"let a{u}_{i} = subgroupMatrixLoad<{L}>(&sa, ca + (r_in + {16 * i}u) * {sa}u"
                 f" + {16 * u}u, false, {sa}u);" for i in range(fm)]
        body += [] if hybrid and v.get("bf") else [
                 _global_b(v, f"b{u}_{j}", f"k0 + {16 * u}u", j, n, k, layout)
                 if hybrid else
                 f"let b{u}_{j} = subgroupMatrixLoad<{R}>(&sb, cb + {16 * u}u * {sb}u + c_in + "
                 f"{16 * j}u, false, {sb}u);" if b_kmajor else
                 f"let b{u}_{j} = subgroupMatrixLoad<{R}>(&sb, cb + (c_in + {16 * j}u) * {sb}u"
                 f" + {16 * u}u, true, {sb}u);" for j in range(fn)]
        body += [f"c_{i}_{j} = subgroupMatrixMultiplyAccumulate(a{u}_{i}, b{u}_{j}, c_{i}_{j});"
                 for i in range(fm) for j in range(fn)]
    if hybrid and v.get("bf"):  # B's fragments issued first, in flight over A's staging
        fetch[:0] = [_global_b(v, f"b{u}_{j}", f"k0 + {16 * u}u", j, n, k, layout)
                     for u in range(ku) for j in range(fn)]
    F, St, B_ = ("\n".join("    " + x for x in block) for block in (fetch, store, body))
    last = k - bk
    if v.get("db"):  # two buffers: stage the next step into the other while multiplying
        loop = f"""  var kf = 0u;\n{F}\n  var s0 = 0u; var t0 = 0u;\n{St}\n  workgroupBarrier();
  for (var k0 = 0u; k0 < {k}u; k0 += {bk}u) {{
    let ca = ((k0 / {bk}u) & 1u) * {size_a}u; let cb = ((k0 / {bk}u) & 1u) * {size_b}u;
    kf = min(k0 + {bk}u, {last}u);\n{F}\n{B_}
    s0 = {size_a}u - ca; t0 = {size_b}u - cb;\n{St}\n    workgroupBarrier();\n  }}"""
    elif v.get("pf"):  # one buffer, the next step's global loads in flight
        loop = f"""  var kf = 0u;\n{F}\n  let s0 = 0u; let t0 = 0u; let ca = 0u; let cb = 0u;
  for (var k0 = 0u; k0 < {k}u; k0 += {bk}u) {{\n{St}\n    workgroupBarrier();
    kf = min(k0 + {bk}u, {last}u);\n{F}\n{B_}\n    workgroupBarrier();\n  }}"""
    else:
        loop = f"""  let s0 = 0u; let t0 = 0u; let ca = 0u; let cb = 0u;
  for (var k0 = 0u; k0 < {k}u; k0 += {bk}u) {{\n    let kf = k0;\n{F}\n{St}
    workgroupBarrier();\n{B_}\n    workgroupBarrier();\n  }}"""
    nbuf = 2 if v.get("db") else 1
    shared = (f"var<workgroup> sa: array<f16, {size_a * nbuf}>;\n"
              f"var<workgroup> sb: array<f16, {size_b * nbuf}>;\n")
    return _kernel(v, n, gtype, shared, "\n".join(decl) + "\n" + loop,
                   "m0 + r_in", "n0 + c_in", m, "f16" if hybrid else "")


def _kernel(v: dict[str, Any], n: int, a_type: str, shared: str, loop: str, row: str,
            col: str, m: int = 0, b_type: str = "") -> str:
    """The entry point around `loop`: tile origin, accumulators, the store of C (f32 straight
    from the fragments, or with ep16 f16 through workgroup memory a fragment at a time)."""
    fm, fn, wm, wn = v["fm"], v["fn"], v["wm"], v["wn"]
    frags = [(i, j) for i in range(fm) for j in range(fn)]
    if v.get("ep16"):
        shared += f"var<workgroup> sc: array<f32, {256 * wm * wn}>;\n"
        store = "\n".join(f"""  subgroupMatrixStore(&sc, sg * 256u, c_{i}_{j}, false, 16u);
  workgroupBarrier();
  for (var e = 0u; e < 8u; e++) {{
    let x = lane + 32u * e;
    C[({row} + {16 * i}u + x / 16u) * {n}u + {col} + {16 * j}u + x % 16u] = f16(sc[sg * 256u + x]);
  }}
  workgroupBarrier();""" for i, j in frags)
    else:
        store = "\n".join(f"  subgroupMatrixStore(&C, ({row} + {16 * i}u) * {n}u + {col} + "
                          f"{16 * j}u, c_{i}_{j}, false, {n}u);" for i, j in frags)
    acc = ACC.replace("f32", "f16") if v.get("acc16") else ACC
    accs = "\n".join(f"  var c_{i}_{j} = {acc}();" for i, j in frags)
    c_type = "f16" if v.get("ep16") or v.get("acc16") else "f32"
    return f"""{HEAD}{_bindings(a_type, c_type, b_type)}{shared}
@compute @workgroup_size({32 * wm * wn})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_id) sg: u32,
        @builtin(local_invocation_index) tid: u32, @builtin(subgroup_invocation_id) lane: u32) {{
{_origin(v, m, n)}
  let r_in = (sg / {wn}u) * {16 * fm}u;
  let c_in = (sg % {wn}u) * {16 * fn}u;
  let row0 = m0 + r_in;
  let col0 = n0 + c_in;
{accs}
{loop}
{store}
}}
"""


def _origin(v: dict[str, Any], m: int, n: int) -> str:
    """m0, n0 of this workgroup's tile: row-major over the grid, or with sw=G grouped G tile
    rows at a time (consecutive workgroups share B's columns and A's rows: L2 reuse)."""
    bm, bn = 16 * v["fm"] * v["wm"], 16 * v["fn"] * v["wn"]
    group = v.get("sw", 0)
    if not group or not m:
        return f"  let m0 = wid.y * {bm}u;\n  let n0 = wid.x * {bn}u;"
    gx, gy = n // bn, m // bm
    return f"""  let pid = wid.y * {gx}u + wid.x;
  let first = pid / {group * gx}u * {group}u;
  let rows_in = min({gy}u - first, {group}u);
  let m0 = (first + pid % {group * gx}u % rows_in) * {bm}u;
  let n0 = (pid % {group * gx}u / rows_in) * {bn}u;"""


class Lab:
    """One Dawn device (toggles from LAB_TOGGLES) and the helpers to build, run and time."""

    def __init__(self) -> None:
        import wgpudawn
        from wgpudawn.backends.dawn import extras

        extra = [t for t in os.environ.get("LAB_TOGGLES", "").split(",") if t]
        self.toggles = [t for t in ("allow_unsafe_apis", "vulkan_enable_f16_on_nvidia", *extra)
                        if t in extras.all_toggles()]
        extras.set_instance_extras(backends=["Vulkan"], enable_toggles=self.toggles,
                                   disable_toggles=["timestamp_quantization"])
        adapters = wgpudawn.gpu.enumerate_adapters_sync()
        ad = ([a for a in adapters if a.info["adapter_type"] == "DiscreteGPU"] or adapters)[0]
        limits = ("max-storage-buffer-binding-size", "max-buffer-size",
                  "max-compute-invocations-per-workgroup", "max-compute-workgroup-size-x",
                  "max-compute-workgroup-storage-size")
        self.dev = ad.request_device_sync(
            required_features=[f for f in ("shader-f16", "subgroups",
                                           "chromium-experimental-subgroup-matrix")
                               if f in ad.features],
            required_limits={name: ad.limits[name] for name in limits})
        self.usage, self.label = wgpudawn.BufferUsage, ad.info["device"]

    def build(self, v: dict[str, Any], m: int, k: int, n: int, layout: str) -> Any:
        """(pipeline, grid, binder) for variant v on this shape; None if it does not fit."""
        bm, bn = 16 * v["fm"] * v["wm"], 16 * v["fn"] * v["wn"]
        bk = 16 * v.get("ku", 1 if v["kind"] == "g" else 2)
        if m % bm or n % bn or k % bk or (v.get("bt") and layout == "nn") or (
                v["kind"] == "h" and layout == "nn"):
            return None
        if v["kind"] == "p":
            from gpustd.gemm import matrix_units

            tile = matrix_units.MatrixTile(v["fm"], v["fn"], v["wm"], v["wn"], bk=bk,
                                           prefetch=v.get("prefetch", True))
            dims = None if v.get("checked") else (m, n, k)
            code = matrix_units.source(tile, False, layout == "nt", 4, 4, dims)
        else:
            code = (global_source if v["kind"] == "g" else staged_source)(v, m, n, k, layout)
        module = self.dev.create_shader_module(code=code)
        pipeline = self.dev.create_compute_pipeline(
            layout="auto", compute={"module": module, "entry_point": "main"})
        return pipeline, (n // bn, m // bm)

    def operands(self, v: dict[str, Any], a: np.ndarray, b: np.ndarray, pipeline: Any,
                 m: int, n: int) -> tuple[Any, Any]:
        """(bind group, C buffer); gpustd's kernel also binds bias and its Params."""
        storage = self.usage.STORAGE
        if v.get("bt"):  # (n, k) -> blocks [n/16][k/16][16][16]
            b = np.ascontiguousarray(b.reshape(n // 16, 16, -1, 16).transpose(0, 2, 1, 3))
        bufs = [self.dev.create_buffer_with_data(data=x.tobytes(), usage=storage)
                for x in (a, b)]
        f16_out = v["kind"] == "p" or v.get("ep16") or v.get("acc16")
        c = self.dev.create_buffer(size=m * n * (2 if f16_out else 4),
                                   usage=storage | self.usage.COPY_SRC)
        if v["kind"] == "p":  # Params: m n k, batch offsets 0, inner 1, alpha 1, beta 0
            params = np.array([m, n, a.shape[1]] + [0] * 7 + [1, 0, 0, 0, 0, 0], np.uint32)
            params[12] = np.array(1.0, np.float32).view(np.uint32)
            bias = self.dev.create_buffer(size=max(2 * n, 16), usage=storage)
            uniform = self.dev.create_buffer_with_data(data=params.tobytes(),
                                                       usage=self.usage.UNIFORM)
            bufs += [bias, c, uniform]
        else:
            bufs.append(c)
        group = self.dev.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=[
            {"binding": i, "resource": {"buffer": x}} for i, x in enumerate(bufs)])
        return group, c

    def run(self, pipeline: Any, group: Any, grid: tuple[int, int], c: Any, reps: int) -> None:
        encoder = self.dev.create_command_encoder()
        for _ in range(reps):
            compute = encoder.begin_compute_pass()
            compute.set_pipeline(pipeline)
            compute.set_bind_group(0, group)
            compute.dispatch_workgroups(*grid)
            compute.end()
        self.dev.queue.submit([encoder.finish()])
        self.dev.queue.read_buffer(c, 0, 16)  # waits for the submit


def _operands(m: int, k: int, n: int, layout: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((m, k)).astype(np.float16),
            rng.standard_normal((n, k) if layout == "nt" else (k, n)).astype(np.float16))


def check(lab: Lab, v: dict[str, Any]) -> float | None:
    """Largest relative error against float64 over CHECK (None: the tile does not fit)."""
    worst = 0.0
    for m, k, n, layout in CHECK:
        built = lab.build(v, m, k, n, layout)
        if built is None and layout == "nn" and (v.get("bt") or v["kind"] == "h"):
            continue  # nt only
        if built is None:
            return None
        a, b = _operands(m, k, n, layout, 1)
        group, c = lab.operands(v, a, b, built[0], m, n)
        lab.run(built[0], group, built[1], c, 1)
        kind = np.float16 if (v["kind"] == "p" or v.get("ep16") or v.get("acc16")) else np.float32
        got = np.frombuffer(lab.dev.queue.read_buffer(c), kind).reshape(m, n)
        b64 = b.astype(np.float64)
        expected = a.astype(np.float64) @ (b64.T if layout == "nt" else b64)
        worst = max(worst, float(np.abs(got - expected).max() / np.abs(expected).max()))
    return worst


def time_ours(lab: Lab, v: dict[str, Any], m: int, k: int, n: int, layout: str) -> float | None:
    """Median ms per dispatch over 7 submits of ~20 ms of back-to-back dispatches."""
    built = lab.build(v, m, k, n, layout)
    if built is None:
        return None
    pipeline, grid = built
    group, c = lab.operands(v, *_operands(m, k, n, layout, 0), pipeline, m, n)
    lab.run(pipeline, group, grid, c, 1)
    start = time.perf_counter()
    lab.run(pipeline, group, grid, c, 1)
    reps = max(3, min(300, int(0.02 / (time.perf_counter() - start))))
    samples = []
    for _ in range(7):
        start = time.perf_counter()
        lab.run(pipeline, group, grid, c, reps)
        samples.append((time.perf_counter() - start) / reps * 1e3)
    return sorted(samples)[3]


def time_torch(torch: Any, m: int, k: int, n: int, layout: str) -> float:
    """Median ms of torch's fp16 matmul (cuBLAS) by CUDA events, 7 samples."""
    a = torch.randn(m, k, device="cuda", dtype=torch.float16)
    b = torch.randn(n, k, device="cuda", dtype=torch.float16)
    b = b.T if layout == "nt" else b.reshape(k, n)
    reps = max(3, min(200, int(1e13 / (2 * m * n * k))))
    for _ in range(3):
        a @ b
    samples = []
    for _ in range(7):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            a @ b
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end) / reps)
    return sorted(samples)[3]


def main() -> None:
    import torch

    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    out, wanted = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "")
    lab, budget = Lab(), float(os.environ.get("LAB_BUDGET", "240"))
    shapes = [f"{m}x{k}x{n}/{layout}" for m, k, n, layout in SHAPES]
    result: dict[str, Any] = {"device": lab.label, "toggles": lab.toggles, "rows": [],
                              "checked": {}, "errors": {},
                              "torch": {s: time_torch(torch, *shape)
                                        for s, shape in zip(shapes, SHAPES)}}
    start = time.time()
    for v in (v for v in VARIANTS if wanted in name(v)):
        if time.time() - start > budget:
            result["errors"][name(v)] = "out of time"
            continue
        try:  # a variant the compiler refuses is a result, not a stop
            error = result["checked"][name(v)] = check(lab, v)
            for s, (m, k, n, layout) in zip(shapes, SHAPES):
                ms = time_ours(lab, v, m, k, n, layout) if error is not None else None
                if ms is not None:
                    result["rows"].append({"variant": name(v), "shape": s, "ms": ms,
                                           "tflops": 2 * m * n * k / ms / 1e9,
                                           "ratio": result["torch"][s] / ms})
        except Exception as e:
            result["errors"][name(v)] = str(e)[:400]
        print(f"{time.time() - start:6.1f} s  {name(v)}  err {result['checked'].get(name(v))}",
              flush=True)
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
    table = {(r["variant"], r["shape"]): r for r in result["rows"]}
    print(f"TFLOP/s (torch ms / ours), toggles {lab.toggles}\n{'variant':38}"
          + "".join(f"{s[:17]:>18}" for s in shapes))
    for variant in result["checked"]:
        print(f"{variant:38}" + "".join(
            (f"{table[variant, s]['tflops']:6.1f} ({table[variant, s]['ratio']:4.2f})"
             if (variant, s) in table else "-").rjust(18) for s in shapes))
    print(f"{'torch fp16':38}" + "".join(
        f"{2 * m * n * k / result['torch'][s] / 1e9:18.1f}" for s, (m, k, n, _) in
        zip(shapes, SHAPES)))
    print("errors:", result["errors"])


if __name__ == "__main__":
    main()
