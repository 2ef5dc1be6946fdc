"""Sweep gemm.wgsl's configurations (tile x K splits x loop shape) over the SD 1.5 UNet's and
VAE's GEMMs, beside plan_gemm's choice and torch.

    python -m tools.gemm_sweep [--json PATH] [--quick] [--dtype float32|float16]

For each m x k x n (layouts as gpustd/gemm/tuning.SD_SHAPES) it times, by timestamp queries
(split-K finishes included), plan_gemm's choice and every configuration, and prints: the
rule's pick, the best with the rule's number of K splits (what the autotuner can choose
without changing a bit of the result), the best of all (which may split K differently: a
change to the rule), and torch (cuBLAS, TF32 off) in the same process where CUDA is there.
A tuning tool: the numbers only mean something on a real GPU.
"""

from __future__ import annotations

import argparse
import itertools
import math
from typing import Any

import numpy as np

import gpucore
from bench import _harness
from gpucore import autotune
from gpustd import Tensor, linalg
from gpustd.gemm import plan as gemm_plan
from gpustd.gemm import portable, tuning

QUICK_SHAPES = [(96, 40, 56, 1, "nt"), (33, 200, 70, 1, "nn")]
SPLITS = (1, 2, 3, 4, 6, 8, 12)


def _configs(m: int, n: int, k: int, limit: int) -> list[tuple[str, int, bool]]:
    """(tile name, splits, paired) worth timing: split-K only where a grid of 64 x 64 tiles
    does not fill the GPU twice over (plan.MULTIPROCESSORS)."""
    waves = math.ceil(m / 64) * math.ceil(n / 64) / gemm_plan.MULTIPROCESSORS
    splits = [s for s in SPLITS if s == 1 or (waves < 2 and s * 16 * 4 <= k)]
    return [(name, s, paired) for (name, tile), s, paired
            in itertools.product(gemm_plan.ALL_TILES.items(), splits, (False, True))
            if tile.workgroup_bytes <= limit and (s == 1 or m * n * s * 4 <= 1 << 30)]


def _torch_ms(torch: Any, a: np.ndarray, b: np.ndarray, layout: str) -> float:
    if torch is None:
        return math.nan
    torch.backends.cuda.matmul.allow_tf32 = False
    ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
    lhs = ta.T if layout[0] == "t" else ta
    rhs = tb.T if layout[1] == "t" else tb
    return _harness.torch_cuda_ms(lambda: torch.matmul(lhs, rhs), repeat=20)


def sweep(device: gpucore.Device, torch: Any, shape: tuple[int, int, int, int, str],
          dtype: np.dtype, runs: int) -> dict[str, Any]:
    m, k, n, _, layout = shape
    trans_a, trans_b = layout[0] == "t", layout[1] == "t"
    rng = np.random.default_rng(0)
    a_np = rng.standard_normal((k, m) if trans_a else (m, k), dtype=np.float32).astype(dtype)
    b_np = rng.standard_normal((n, k) if trans_b else (k, n), dtype=np.float32).astype(dtype)
    a, b = Tensor.from_numpy(a_np, device=device), Tensor.from_numpy(b_np, device=device)
    c = Tensor.empty((m, n), dtype, device=device)
    plan = gemm_plan.batch_plan((), (), (), m * k, k * n)

    def call(**override: Any) -> Any:
        return lambda: portable.record_gemm(a.buffer, b.buffer, c.buffer, None, m=m, n=n,
                                            k=k, trans_a=trans_a, trans_b=trans_b, alpha=1.0,
                                            beta=0.0, plan=plan, **override)

    rule = gemm_plan.plan_gemm(m, n, k, 1)
    rule_splits, _ = gemm_plan.k_partition(rule.splits, k, m * n, device)
    limit = device.limits["max-compute-workgroup-storage-size"]
    configs = _configs(m, n, k, limit)
    configs += [(name, rule_splits, paired) for name, _, paired in configs
                if rule_splits > 1 and _ == 1]
    calls = {f"{name}/s{s}/{'paired' if paired else 'plain'}":
             call(tile=gemm_plan.ALL_TILES[name], splits=s, paired=paired)
             for name, s, paired in dict.fromkeys(configs)}
    rule_key = (f"{tuning.tile_name(rule.tile)}/s{rule_splits}/"
                f"{'paired' if rule.paired else 'plain'}")
    times = autotune._time_all(device, calls, calls[rule_key], runs)
    same_splits = {key: v for key, v in times.items() if f"/s{rule_splits}/" in key}
    best = min(times, key=times.__getitem__)
    best_same = min(same_splits, key=same_splits.__getitem__)
    torch_ms = _torch_ms(torch, a_np, b_np, layout) if dtype == np.float32 else math.nan
    return {"m": m, "k": k, "n": n, "layout": layout, "dtype": np.dtype(dtype).name,
            "torch_ms": torch_ms, "rule": rule_key, "rule_ms": times.get(rule_key, math.nan),
            "best_same_splits": best_same, "best_same_splits_ms": times[best_same],
            "best": best, "best_ms": times[best],
            "TFLOPs_best": 2 * m * k * n / (times[best] * 1e9), "all_ms": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write every timing here")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (a smoke run)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16"))
    args = parser.parse_args()
    device = gpucore.default_device()
    torch = None if args.quick else _harness.torch_cuda()
    size = 64 if args.quick else 2048  # lift the GPU out of its idle clocks first
    x = Tensor.from_numpy(np.ones((size, size), np.float32), device=device)
    for _ in range(30):
        linalg.matmul(x, x)
    device.synchronize()
    rows = []
    print(f"{'m x k x n':>18} {'lay':>3} {'torch':>7} {'rule':>22} {'ms':>7} "
          f"{'best, same splits':>22} {'ms':>7} {'best':>22} {'ms':>7} {'torch/best':>10}")
    for shape in (QUICK_SHAPES if args.quick else tuning.SD_SHAPES):
        r = sweep(device, torch, shape, np.dtype(args.dtype), 3 if args.quick else 7)
        rows.append(r)
        print(f"{r['m']:>6}x{r['k']:>5}x{r['n']:>5} {r['layout']:>3} {r['torch_ms']:7.4f} "
              f"{r['rule']:>22} {r['rule_ms']:7.4f} {r['best_same_splits']:>22} "
              f"{r['best_same_splits_ms']:7.4f} {r['best']:>22} {r['best_ms']:7.4f} "
              f"{r['torch_ms'] / r['best_ms']:10.2f}", flush=True)
        if args.json:  # after every shape, atomically: a run cut short keeps what it measured
            _harness.write_json(args.json, {"adapter": device.name, "runtime": device.info.runtime,
                                            "driver": device.info.driver, "rows": rows})


if __name__ == "__main__":
    main()
