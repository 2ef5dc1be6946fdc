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


def _kernels_main(device: gpucore.Device, quick: bool, torch: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for model, (m, shapes) in (QUICK_KERNEL_SHAPES if quick else KERNEL_SHAPES).items():
        for n, k in shapes:
            rows += kernel_rows(device, model, m, n, k, torch)
            print(f"{model} {m} x {n} x {k} done", flush=True)
    print(f"{'model':<13} {'m x n x k':<17} {'acc':<4} {'tile':<32} {'variant':<10} "
          f"{'GPU ms':>7} {'TFLOP/s':>7} {'rel_err':>8} bits")
    for r in rows:
        bits = {True: "same", False: "DIFFER"}.get(r.get("same_bits"), "")
        print(f"{r['model']:<13} {r['m']}x{r['n']}x{r['k']:<7} {r.get('acc', ''):<4} "
              f"{r.get('tile', ''):<32} {r['variant']:<10} {r['gpu_ms']:7.3f} "
              f"{r['tflops']:7.1f} {r.get('rel_err', math.nan):8.1e} {bits}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--m", type=int, default=4256, help="rows (tokens); default 4256")
    parser.add_argument("--quick", action="store_true", help="small shapes (a smoke run)")
    parser.add_argument("--kernels", action="store_true",
                        help="the ragged-M kernel against the checked and the aligned ones")
    args = parser.parse_args()
    device = gpucore.default_device()
    if not sm.available(device):
        raise SystemExit(f"{device.info.label} has no f16 subgroup matrices; run under Dawn "
                         "(GPUCORE_RUNTIME=dawn) or with GPUCORE_EMULATE_MATRIX=1")
    cuda = _harness.torch_cuda()
    if args.kernels:
        rows = _kernels_main(device, args.quick, cuda)
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
