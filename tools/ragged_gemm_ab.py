"""Z-Image's GEMMs on a ragged M: which matrix-unit tile runs them fastest.

    GPUCORE_RUNTIME=dawn python -m tools.ragged_gemm_ab [--json PATH] [--m 4256] [--quick]

Z-Image's joint blocks multiply 4096 image patches + a caption padded to 32 tokens (4256 for
the benchmark's 160) by its weights: M is not a multiple of 128 or 256. Each product (x @ w.T,
"nt", f16, f32 accumulation) is timed on choose_tile's tile and on the big tiles run checked
(part-filled last row of workgroups), beside the same product split into its aligned rows
and the rest (two dispatches: what a row split would cost) and torch fp16 (cuBLAS). Every
variant is checked against the same f16 operands multiplied in float32 (torch on CUDA,
numpy otherwise). `--quick`: small shapes (a smoke run on any adapter with matrix units,
e.g. lavapipe with GPUCORE_EMULATE_MATRIX=1).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--m", type=int, default=4256, help="rows (tokens); default 4256")
    parser.add_argument("--quick", action="store_true", help="small shapes (a smoke run)")
    args = parser.parse_args()
    device = gpucore.default_device()
    if not sm.available(device):
        raise SystemExit(f"{device.info.label} has no f16 subgroup matrices; run under Dawn "
                         "(GPUCORE_RUNTIME=dawn) or with GPUCORE_EMULATE_MATRIX=1")
    cuda = _harness.torch_cuda()
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
