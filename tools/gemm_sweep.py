"""Sweep gemm.wgsl's configurations (tile x K splits x loop shape) over the SD 1.5 UNet's GEMMs.

    python -m tools.gemm_sweep [--json PATH] [--quick]

For each m x k x n (nt layout: x @ w.T, as linear layers run) it times plan_gemm's choice and
every configuration by timestamp queries (split-K finishes included) and prints the best
beside the plan's, so a plan can be checked against what the kernel can do. A tuning tool:
the numbers only mean something on a real GPU.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from typing import Any

import numpy as np

import gpucore
from gpustd import Tensor, _gemm

# m x k x n of the UNet step's GEMMs at 2x4x64x64 (CFG batch 2: tokens = 2 x h x w).
UNET_SHAPES = [
    (8192, 320, 320), (8192, 320, 2560), (8192, 1280, 320),
    (2048, 640, 640), (2048, 640, 5120), (2048, 2560, 640),
    (512, 1280, 1280), (512, 1280, 10240), (512, 5120, 1280),
    (154, 768, 320), (154, 768, 1280), (2, 1280, 1280), (4096, 4096, 4096),
]
QUICK_SHAPES = [(96, 40, 56), (33, 200, 70)]
SPLITS = (1, 2, 3, 4, 6)


def _time(device: gpucore.Device, fn: Any, runs: int) -> float:
    fn()
    fn()
    device.synchronize()
    times = []
    for _ in range(runs):
        with device.profile() as prof:
            fn()
        times.append(prof.total_ns() / 1e6)
    return statistics.median(times)


def sweep(device: gpucore.Device, shape: tuple[int, int, int], runs: int) -> dict[str, Any]:
    m, k, n = shape
    rng = np.random.default_rng(0)
    a = Tensor.from_numpy(rng.standard_normal((m, k), dtype=np.float32), device=device)
    b = Tensor.from_numpy(rng.standard_normal((n, k), dtype=np.float32), device=device)
    c = Tensor.empty((m, n), np.float32, device=device)
    plan = _gemm.batch_plan((), (), (), m * k, k * n)

    def call(**override: Any) -> Any:
        return lambda: _gemm.record_gemm(a.buffer, b.buffer, c.buffer, None, m=m, n=n, k=k,
                                         trans_a=False, trans_b=True, alpha=1.0, beta=0.0,
                                         plan=plan, **override)

    chosen = _gemm.plan_gemm(m, n, k, 1)
    results = {"plan": _time(device, call(), runs)}
    for (name, tile), splits, paired in itertools.product(_gemm.TILES.items(), SPLITS,
                                                          (False, True)):
        if splits > 1 and m * n * splits * 4 > 1 << 30:
            continue
        key = f"{name}/s{splits}/{'paired' if paired else 'plain'}"
        results[key] = _time(device, call(tile=tile, splits=splits, paired=paired), runs)
    best = min((v, key) for key, v in results.items() if key != "plan")
    return {"m": m, "k": k, "n": n,
            "plan": f"{chosen.tile.bm}x{chosen.tile.bn}/s{chosen.splits}/"
                    f"{'paired' if chosen.paired else 'plain'}",
            "plan_ms": results["plan"], "best": best[1], "best_ms": best[0],
            "plan_over_best": results["plan"] / best[0],
            "TFLOPs_best": 2 * m * k * n / (best[0] * 1e9), "all_ms": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write every timing here")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (a smoke run)")
    args = parser.parse_args()
    device = gpucore.default_device()
    if not device.has_timestamps:
        raise SystemExit("gemm_sweep needs timestamp queries (a GPU with timestamp-query)")
    rows = [sweep(device, s, 3 if args.quick else 7)
            for s in (QUICK_SHAPES if args.quick else UNET_SHAPES)]
    print(f"{'m x k x n':>20} {'plan':>22} {'plan ms':>9} {'best':>22} {'best ms':>9} {'x':>5}")
    for r in rows:
        print(f"{r['m']:>6}x{r['k']:>6}x{r['n']:>6} {r['plan']:>22} {r['plan_ms']:9.4f} "
              f"{r['best']:>22} {r['best_ms']:9.4f} {r['plan_over_best']:5.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"adapter": device.name, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
