"""Z-Image's GEMMs on a ragged M: which matrix-unit tile runs them fastest, and (--kernels)
the kernel for a ragged M against the checked one and the aligned one.

    GPUCORE_RUNTIME=dawn python -m tools.ragged_gemm_ab [--json PATH] [--m 4256] [--quick]
    GPUCORE_RUNTIME=dawn python -m tools.ragged_gemm_ab --kernels [--json PATH] [--quick]

Z-Image's joint blocks multiply 4096 image patches + a caption padded to 32 tokens (4256 for
the benchmark's 160) by its weights: M is not a multiple of 128 or 256. Each product (x @ w.T,
"nt", f16, f32 accumulation) is timed on choose_tile's tile and on the big tiles run checked
(part-filled last row of workgroups), beside the same product split into its aligned rows
and the rest (two dispatches: what a row split would cost) and torch fp16 (cuBLAS). Every
variant is checked against the same f16 operands multiplied in float32 (torch on CUDA,
numpy otherwise). `--quick`: small shapes (a smoke run on any adapter with matrix units,
e.g. lavapipe with GPUCORE_EMULATE_MATRIX=1).

--kernels: for each model's products (KERNEL_SHAPES) and each accumulation (f32, f16), the
rule's tile run by the checked kernel (matrix_units.RAGGED_KERNEL off: every load and store
bound-checked, m, n, k uniforms), by the kernel for a ragged M (n, k constants, C's rows
alone checked; `same_bits` says whether its C equals the checked kernel's bit for bit), and
the aligned kernel on the nearest multiple of the tile's rows (`m` says which: compare
TFLOP/s); with f16 accumulators also 256 x 256 tiles (the aligned rule's) where n fills them;
beside torch fp16 (cuBLAS, f32 accumulation).

--kernels --int8: the same for the W8A8 GEMM (gpustd/gemm/int8_units.py) on random int8
operands and scales, its rule's tile (int8_units.choose_tile), at the shapes above and Wan
2.2's (32,760 rows, hidden 1536, MLP 8960);
each C's first and last rows checked against the exact sums' epilogue in float64 (`steps`:
the largest distance in f16 steps; 1 or less passes), beside torch._int_mm (int8 -> int32, no
scales) and torch fp16.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import numpy as np

import gpucore
from bench import _harness
from gpustd import Tensor
from gpustd.gemm import int8_units, portable
from gpustd.gemm import matrix_units as sm
from gpustd.gemm import plan as gemm_plan

# Z-Image Turbo's (n, k): q/k/v/out 3840 x 3840, w1/w3 10240 x 3840, w2 3840 x 10240
SHAPES = [(3840, 3840), (10240, 3840), (3840, 10240)]
QUICK_SHAPES = [(128, 64), (256, 128)]
TILES = ("64x64", "256x128", "128x256", "128x128k16", "128x128")
# --kernels: (rows, [(n, k)]) by model. Z-Image's joint blocks: 4096 patches + a 160-token
# caption; SD 3.5 Large's hidden 2432 and MLP 9728 on 4096 patches + 333 prompt tokens (the
# rows of a joint sequence), and on the 2 x 333 prompt rows of its context stream (CFG).
SD35 = [(2432, 2432), (9728, 2432), (2432, 9728)]
KERNEL_SHAPES = {"zimage": (4256, SHAPES), "sd35": (4429, SD35), "sd35-context": (666, SD35)}
QUICK_KERNEL_SHAPES = {"quick": (141, [(128, 64), (256, 96)])}
# --int8: (rows, [(n, k)]) by model
INT8_SHAPES = {**KERNEL_SHAPES, "wan": (32760, [(8960, 1536), (1536, 8960)])}
QUICK_INT8_SHAPES = {"quick": (600, [(128, 256)])}
_INT8_CHECK_ROWS = 64  # the first and the last this many rows of C against float64


def _call(device: gpucore.Device, tile: Any, a: Tensor, b: Tensor, c: Tensor, m: int,
          n: int, k: int) -> Any:
    plan = gemm_plan.batch_plan((), (), (), m * k, k * n)

    def record() -> None:
        sm.record_gemm_matrix(a.buffer, b.buffer, c.buffer, b.buffer, has_bias=False, m=m,
                              n=n, k=k, trans_a=False, trans_b=True, alpha=1.0, beta=0.0,
                              plan=plan, tile=tile)
    return record


def _expected(a: np.ndarray, b: np.ndarray, torch: Any) -> np.ndarray:
    if torch is None:
        return a.astype(np.float32) @ b.astype(np.float32).T
    ta, tb = (torch.from_numpy(x).cuda().float() for x in (a, b))
    return (ta @ tb.T).cpu().numpy()


def one_shape(device: gpucore.Device, m: int, n: int, k: int, torch: Any
              ) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    a_host = rng.standard_normal((m, k)).astype(np.float16)
    b_host = (rng.standard_normal((n, k)) * 0.05).astype(np.float16)
    expected = _expected(a_host, b_host, torch)
    scale = float(np.abs(expected).max())
    a = Tensor.from_numpy(a_host, device=device)
    b = Tensor.from_numpy(b_host, device=device)
    c = Tensor.empty((m, n), np.float16, device=device)
    rule = sm.choose_tile(m, n, 1, k=k)
    rows: list[dict[str, Any]] = []
    for name in TILES:
        tile = sm.TILES[name]
        record = _call(device, tile, a, b, c, m, n, k)
        record()
        error = float(np.abs(c.numpy().astype(np.float32) - expected).max()) / scale
        timing = _harness.ours_ms(record, device, warmup=2, repeat=10)
        rows.append({"m": m, "n": n, "k": k, "variant": name, "rule": tile == rule,
                     "aligned": sm.aligned(tile, m, n, k), "rel_err": error, **timing})
    # the row split: the aligned rows on choose_tile's tile for them, the rest on its own
    body = m - m % 256
    if 0 < body < m:
        parts = []
        for rows_m in (body, m - body):
            part_a = Tensor.from_numpy(a_host[:rows_m], device=device)
            part_c = Tensor.empty((rows_m, n), np.float16, device=device)
            parts.append(_call(device, sm.choose_tile(rows_m, n, 1, k=k), part_a, b, part_c,
                               rows_m, n, k))

        def split() -> None:
            for record in parts:
                record()
        rows.append({"m": m, "n": n, "k": k, "variant": f"split {body}+{m - body}",
                     **_harness.ours_ms(split, device, warmup=2, repeat=10)})
    if torch is not None:
        ta = torch.from_numpy(a_host).cuda()
        tb = torch.from_numpy(b_host).cuda()
        ms = _harness.torch_cuda_ms(lambda: ta @ tb.T, repeat=20)
        rows.append({"m": m, "n": n, "k": k, "variant": "torch fp16", "gpu_ms": ms})
    for row in rows:
        row["tflops"] = 2 * m * n * k / (row["gpu_ms"] * 1e9)
    return rows


def _rel_err(c: Tensor, rows: int, expected: np.ndarray) -> float:
    want = expected[:rows]
    got = c.numpy()[:rows].astype(np.float32)
    return float(np.abs(got - want).max() / np.abs(want).max())


def kernel_rows(device: gpucore.Device, model: str, m: int, n: int, k: int, torch: Any
                ) -> list[dict[str, Any]]:
    """--kernels' rows for one m x n x k (see the module's docstring)."""
    tiles = {acc: [sm.choose_tile(m, n, 1, k=k, accumulate=acc)] for acc in ("f32", "f16")}
    big = sm.ACC16_TILES["256x256g8"]
    if (n % big.bn == 0 and k % big.bk == 0 and big not in tiles["f16"]
            and big.shared_bytes() <= device.limits["max-compute-workgroup-storage-size"]):
        tiles["f16"].append(big)
    nearest = {t.name: max(t.bm, round(m / t.bm) * t.bm) for ts in tiles.values() for t in ts}
    most = max(m, *nearest.values())
    rng = np.random.default_rng(0)
    a_host = rng.standard_normal((most, k)).astype(np.float16)
    b_host = (rng.standard_normal((n, k)) * 0.05).astype(np.float16)
    expected = _expected(a_host, b_host, torch)
    # A of exactly m rows for the ragged products (the clamped loads must stay inside it)
    a = Tensor.from_numpy(a_host[:m], device=device)
    a_most = Tensor.from_numpy(a_host, device=device)
    b = Tensor.from_numpy(b_host, device=device)
    c = Tensor.empty((m, n), np.float16, device=device)
    c_most = Tensor.empty((most, n), np.float16, device=device)
    rows: list[dict[str, Any]] = []
    before = sm.RAGGED_KERNEL
    try:
        for acc, candidates in tiles.items():
            for tile in candidates:
                base = {"model": model, "m": m, "n": n, "k": k, "acc": acc, "tile": tile.name}
                bits = {}
                for variant, ragged in (("checked", False), ("ragged", True)):
                    sm.RAGGED_KERNEL = ragged
                    record = _call(device, tile, a, b, c, m, n, k)
                    record()
                    bits[variant] = c.numpy().view(np.uint16)
                    rows.append({**base, "variant": variant,
                                 "rel_err": _rel_err(c, m, expected),
                                 **_harness.ours_ms(record, device, warmup=2, repeat=10)})
                rows[-1]["same_bits"] = bool(np.array_equal(bits["checked"], bits["ragged"]))
                rows_al = nearest[tile.name]
                record = _call(device, tile, a_most, b, c_most, rows_al, n, k)
                record()
                rows.append({**base, "m": rows_al, "variant": "aligned",
                             "rel_err": _rel_err(c_most, rows_al, expected),
                             **_harness.ours_ms(record, device, warmup=2, repeat=10)})
    finally:
        sm.RAGGED_KERNEL = before
    if torch is not None:
        ta = torch.from_numpy(a_host[:m]).cuda()
        tb = torch.from_numpy(b_host).cuda()
        rows.append({"model": model, "m": m, "n": n, "k": k, "variant": "torch fp16",
                     "gpu_ms": _harness.torch_cuda_ms(lambda: ta @ tb.T, repeat=20)})
    for row in rows:
        row["tflops"] = 2 * row["m"] * n * k / (row["gpu_ms"] * 1e9)
    return rows


def _steps(c: Tensor, m: int, qa: np.ndarray, qb: np.ndarray, sa: np.ndarray,
           sb: np.ndarray) -> float:
    """The largest distance, in f16 steps, of C's first and last rows from the exact sums'
    epilogue in float64."""
    rows = np.r_[0:_INT8_CHECK_ROWS, m - _INT8_CHECK_ROWS:m]
    want = (qa[rows].astype(np.float64) @ qb.astype(np.float64).T) * sa[rows, None] * sb
    got = c.numpy().reshape(-1, len(sb))[rows].astype(np.float64)
    return float((np.abs(got - want) / np.spacing(np.abs(want).astype(np.float16))).max())


def int8_kernel_rows(device: gpucore.Device, model: str, m: int, n: int, k: int, torch: Any
                     ) -> list[dict[str, Any]]:
    """--kernels --int8's rows for one m x n x k (see the module's docstring)."""
    tile = int8_units.choose_tile(m, n, k)
    kw = k // 4
    rows_al = max(tile.bm, round(m / tile.bm) * tile.bm)
    most = max(m, rows_al)
    rng = np.random.default_rng(0)
    qa = rng.integers(-127, 128, (most, k), dtype=np.int8)
    qb = rng.integers(-127, 128, (n, k), dtype=np.int8)
    sa = rng.uniform(1e-3, 2e-3, most).astype(np.float32)
    sb = rng.uniform(1e-4, 2e-4, n).astype(np.float32)
    a, a_most, b = (Tensor.from_numpy(x.view(np.int32), device=device)
                    for x in (qa[:m], qa, qb))  # A of exactly m rows for the ragged products
    scale_a, scale_b = (Tensor.from_numpy(x, device=device) for x in (sa, sb))
    c = Tensor.empty((m, n), np.float16, device=device)
    c_most = Tensor.empty((most, n), np.float16, device=device)
    no_bias = portable.no_bias(device, np.float16)

    def call(rows_m: int, a: Tensor, c: Tensor) -> Any:
        return lambda: int8_units.record_w8a8_matrix(
            a.buffer, b.buffer, scale_a.buffer, scale_b.buffer, no_bias, c.buffer, m=rows_m,
            n=n, kw=kw, has_bias=False, beta=0.0, tile=tile)
    base = {"model": model, "m": m, "n": n, "k": k, "acc": "i32", "tile": tile.name}
    rows: list[dict[str, Any]] = []
    bits = {}
    before = sm.RAGGED_KERNEL
    try:
        for variant, ragged in (("checked", False), ("ragged", True)):
            sm.RAGGED_KERNEL = ragged
            dims = int8_units.kernel_dims(tile, m, n, kw)
            record = call(m, a, c)
            record()
            bits[variant] = c.numpy().view(np.uint16)
            rows.append({**base, "variant": variant, "dims": str(dims),
                         "steps": _steps(c, m, qa, qb, sa, sb),
                         **_harness.ours_ms(record, device, warmup=2, repeat=10)})
    finally:
        sm.RAGGED_KERNEL = before
    rows[-1]["same_bits"] = bool(np.array_equal(bits["checked"], bits["ragged"]))
    record = call(rows_al, a_most, c_most)
    record()
    rows.append({**base, "m": rows_al, "variant": "aligned",
                 "dims": str(int8_units.kernel_dims(tile, rows_al, n, kw)),
                 "steps": _steps(c_most, rows_al, qa[:rows_al], qb, sa[:rows_al], sb),
                 **_harness.ours_ms(record, device, warmup=2, repeat=10)})
    if torch is not None:
        ta, tb = (torch.from_numpy(x).cuda() for x in (qa[:m], qb))
        rows.append({**base, "tile": "", "variant": "torch._int_mm",
                     "gpu_ms": _harness.torch_cuda_ms(lambda: torch._int_mm(ta, tb.T),
                                                      repeat=20)})
        fa, fb = (x.half() for x in (ta, tb))
        rows.append({**base, "tile": "", "acc": "", "variant": "torch fp16",
                     "gpu_ms": _harness.torch_cuda_ms(lambda: fa @ fb.T, repeat=20)})
    for row in rows:
        row["tflops"] = 2 * row["m"] * n * k / (row["gpu_ms"] * 1e9)
    return rows


def _kernels_main(device: gpucore.Device, quick: bool, torch: Any,
                  int8: bool = False) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if int8:
        models, measure = (QUICK_INT8_SHAPES if quick else INT8_SHAPES), int8_kernel_rows
    else:
        models, measure = (QUICK_KERNEL_SHAPES if quick else KERNEL_SHAPES), kernel_rows
    for model, (m, shapes) in models.items():
        for n, k in shapes:
            rows += measure(device, model, m, n, k, torch)
            print(f"{model} {m} x {n} x {k} done", flush=True)
    error = "steps" if int8 else "rel_err"
    print(f"{'model':<13} {'m x n x k':<17} {'acc':<4} {'tile':<32} {'variant':<13} "
          f"{'GPU ms':>7} {'TFLOP/s':>7} {error:>8} bits")
    for r in rows:
        bits = {True: "same", False: "DIFFER"}.get(r.get("same_bits"), "")
        print(f"{r['model']:<13} {r['m']}x{r['n']}x{r['k']:<7} {r.get('acc', ''):<4} "
              f"{r.get('tile', ''):<32} {r['variant']:<13} {r['gpu_ms']:7.3f} "
              f"{r['tflops']:7.1f} {r.get(error, math.nan):8.1e} {bits}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--m", type=int, default=4256, help="rows (tokens); default 4256")
    parser.add_argument("--quick", action="store_true", help="small shapes (a smoke run)")
    parser.add_argument("--kernels", action="store_true",
                        help="the ragged-M kernel against the checked and the aligned ones")
    parser.add_argument("--int8", action="store_true",
                        help="with --kernels: the W8A8 GEMM's kernels rather than f16's")
    args = parser.parse_args()
    device = gpucore.default_device()
    if args.int8 and not int8_units.available(device):
        raise SystemExit(f"{device.info.label} has no i8 subgroup matrices; run under Dawn "
                         "(GPUCORE_RUNTIME=dawn) or with GPUCORE_EMULATE_MATRIX=1")
    if not sm.available(device):
        raise SystemExit(f"{device.info.label} has no f16 subgroup matrices; run under Dawn "
                         "(GPUCORE_RUNTIME=dawn) or with GPUCORE_EMULATE_MATRIX=1")
    cuda = _harness.torch_cuda()
    if args.kernels:
        rows = _kernels_main(device, args.quick, cuda, args.int8)
        if args.json:
            _harness.write_json(args.json, {"environment": _harness.environment(device),
                                            "rows": rows})
        return
    m = 300 if args.quick else args.m
    rows: list[dict[str, Any]] = []
    for n, k in QUICK_SHAPES if args.quick else SHAPES:
        rows += one_shape(device, m, n, k, cuda)
    print(f"{'m x n x k':<20} {'variant':<16} {'GPU ms':>8} {'TFLOP/s':>8} {'rel_err':>9}")
    for r in rows:
        mark = " (rule)" if r.get("rule") else ""
        err = r.get("rel_err", math.nan)
        print(f"{r['m']}x{r['n']}x{r['k']:<8} {r['variant'] + mark:<16} {r['gpu_ms']:8.3f} "
              f"{r['tflops']:8.1f} {err:9.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": _harness.environment(device), "rows": rows}, f,
                      indent=1, default=float)


if __name__ == "__main__":
    main()
