"""Sweep nn.attention's tile plans over the SD 1.5 UNet's attention shapes, beside torch.

    python -m tools.attention_sweep [--json PATH] [--quick] [--seconds S] [--top N]

For each shape (the UNet's (B, L, H*D) layout, or (B, H, L, D) as bench/nn.py runs it) it
checks every timed plan against torch's scaled_dot_product_attention in float64 on ragged
sizes (plain and causal), times the plans the cost model ranks highest (plus their
prefetching twins, the best per key-slice count KS, and the old model's choice: the best
plan with KS = 1 and no prefetch) by timestamp queries, then re-times the old choice,
plan_for's and the fastest in interleaved rounds (so a drift in clocks hits them alike) and
plan_for's with wall time, beside torch SDPA float32 (TF32 off) in the same process. A
tuning tool: the numbers only mean something on a real GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import statistics
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

import gpucore
from bench import _harness
from gpustd import Tensor, nn

attention_module = importlib.import_module("gpustd.nn.attention")
plans = importlib.import_module("gpustd.nn._attention_plan")

# (label, batch, heads, query tokens, key tokens, head dim): SD 1.5 at 64x64 latents, CFG
# batch 2; the VAE decoder's one 512-wide head at 512x512 pixels rides along.
SHAPES = [
    ("self 4096 d40", 2, 8, 4096, 4096, 40), ("self 4096 d40 bhld", 2, 8, 4096, 4096, 40),
    ("cross 4096x77 d40", 2, 8, 4096, 77, 40), ("self 1024 d80 bhld", 2, 8, 1024, 1024, 80),
    ("self 1024 d80", 2, 8, 1024, 1024, 80), ("cross 1024x77 d80", 2, 8, 1024, 77, 80),
    ("self 256 d160", 2, 8, 256, 256, 160), ("cross 256x77 d160", 2, 8, 256, 77, 160),
    ("self 64 d160", 2, 8, 64, 64, 160), ("cross 64x77 d160", 2, 8, 64, 77, 160),
    ("vae 4096 d512", 1, 1, 4096, 4096, 512),
]
QUICK_SHAPES = [("tiny self d40", 1, 2, 64, 64, 40), ("tiny cross d24", 1, 2, 50, 77, 24)]
RAGGED = (1, 2, 203, 190)  # batch, heads, Lq, Lk: no tile divides them


@contextlib.contextmanager
def forced(plan: plans.Plan) -> Iterator[None]:
    """Make nn.attention use `plan` whatever plan_for would pick."""
    original = attention_module.plan_for
    attention_module.plan_for = lambda *args: plan
    try:
        yield
    finally:
        attention_module.plan_for = original


def upload(device: gpucore.Device, arrays: list[np.ndarray]) -> list[Tensor]:
    return [Tensor.from_numpy(a, device=device) for a in arrays]


def split_heads(x: np.ndarray, heads: int) -> np.ndarray:
    b, length, width = x.shape
    return x.reshape(b, length, heads, width // heads).transpose(0, 2, 1, 3)


def ragged_error(device: gpucore.Device, torch: Any, plan: plans.Plan, d: int) -> float:
    """Max |ours - torch float64| / max |torch| over a ragged plain and causal call."""
    b, h, lq, lk = RAGGED
    rng = np.random.default_rng(d)
    worst = 0.0
    for causal, keys in ((False, lk), (True, lq)):
        arrays = [rng.uniform(-2, 2, (b, n, h * d)).astype(np.float32) for n in (lq, keys, keys)]
        with forced(plan):
            got = nn.attention(*upload(device, arrays), heads=h, causal=causal).numpy()
        split = [torch.from_numpy(split_heads(a, h).astype(np.float64)) for a in arrays]
        expected = torch.nn.functional.scaled_dot_product_attention(*split, is_causal=causal)
        want = expected.numpy().transpose(0, 2, 1, 3).reshape(got.shape)
        worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
    return worst


def gpu_ms(device: gpucore.Device, fn: Any, runs: int) -> float:
    fn()
    device.synchronize()
    times = []
    for _ in range(runs):
        with device.profile() as prof:
            fn()
        times.append(prof.total_ns() / 1e6)
    return statistics.median(times)


def interleaved(device: gpucore.Device, call: Any, contenders: list[plans.Plan],
                rounds: int) -> dict[str, float]:
    """Median GPU ms of each plan over `rounds` rounds that time every plan in turn."""
    unique = list(dict.fromkeys(contenders))
    times: dict[str, list[float]] = {repr(p): [] for p in unique}
    for _ in range(rounds):
        for plan in unique:
            with forced(plan):
                times[repr(plan)].append(gpu_ms(device, call, 3))
    return {key: statistics.median(values) for key, values in times.items()}


def ranked(d: int, device: gpucore.Device, lq: int, lk: int, bh: int, top: int
           ) -> list[plans.Plan]:
    """The `top` plans the model likes best and their prefetching twins, the best for each
    (KS, PF) and the old choice (the best with KS = 1, PF = 0) first."""
    budget = device.limits["max-compute-workgroup-storage-size"]
    invocations = device.limits["max-compute-invocations-per-workgroup"]
    found = sorted(plans.candidates(d, budget, invocations, plans.subgroup_size(device)),
                   key=lambda p: plans.cost(p, lq, bh, lk))
    chosen = [next(p for p in found if p.KS == 1 and not p.PF)]
    for plan in found[:top]:
        chosen += [plan, replace(plan, PF=1)] if plan.prefetchable() else [plan]
    for variant in sorted({(p.KS, p.PF) for p in found}):
        chosen.append(next(p for p in found if (p.KS, p.PF) == variant))
    return list(dict.fromkeys(chosen))


def sweep(device: gpucore.Device, torch: Any, spec: tuple, top: int, seconds: float,
          runs: int) -> dict[str, Any]:
    label, b, h, lq, lk, d = spec
    bhld = label.endswith("bhld")
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((b, n, h * d), dtype=np.float32) for n in (lq, lk, lk)]
    if bhld:
        arrays = [np.ascontiguousarray(split_heads(a, h)) for a in arrays]
    q, k, v = upload(device, arrays)

    def call() -> Tensor:
        return nn.attention(q, k, v) if bhld else nn.attention(q, k, v, heads=h)

    started, timings, errors, by_key = time.perf_counter(), {}, {}, {}
    order = ranked(d, device, lq, lk, b * h, top)
    for plan in order:
        if time.perf_counter() - started > seconds:
            break
        key = repr(plan)
        by_key[key] = plan
        try:
            errors[key] = ragged_error(device, torch, plan, d)
            with forced(plan):
                timings[key] = gpu_ms(device, call, runs)
        except Exception as exc:  # a plan the compiler refuses is a result, not a crash
            timings[key], errors[key] = math.inf, f"{type(exc).__name__}: {exc}"[:300]
    old, model = order[0], plans.plan_for(d, device, lq, b * h, lk)
    best = min(timings, key=timings.get)
    row = {"shape": label, "dims": [b, h, lq, lk, d], "plans_timed": len(timings),
           "model_plan": repr(model), "best_plan": best, "old_plan": repr(old),
           "old_gpu_ms": timings.get(repr(old), math.nan), "best_gpu_ms": timings[best]}
    row["rounds_gpu_ms"] = interleaved(device, call, [old, model, by_key[best]], 5)
    with forced(model):
        row["model"] = _harness.ours_ms(call, device, warmup=2, repeat=20)
        got = call().numpy()
    if torch is not None and torch.cuda.is_available():
        tq, tk, tv = (torch.from_numpy(a).cuda() if bhld else
                      torch.from_numpy(a).cuda().view(b, -1, h, d).transpose(1, 2)
                      for a in arrays)

        def theirs() -> Any:
            return torch.nn.functional.scaled_dot_product_attention(tq, tk, tv)

        row["torch_gpu_ms"] = _harness.torch_cuda_ms(theirs, repeat=20)
        row["torch_wall_ms"] = _harness.torch_wall_ms(theirs, torch, 20)
        want = theirs().cpu().numpy() if bhld else (
            theirs().transpose(1, 2).reshape(b, lq, h * d).cpu().numpy())
        row["model_rel_err_vs_torch"] = float(np.abs(got - want).max() / np.abs(want).max())
    row["ragged_err"], row["all_gpu_ms"] = errors, timings
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write every timing here")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (a smoke run)")
    parser.add_argument("--seconds", type=float, default=10.0, help="plan sweep per shape")
    parser.add_argument("--top", type=int, default=24, help="plans ranked by the model")
    args = parser.parse_args()
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = gpucore.default_device()
    if not device.has_timestamps:
        raise SystemExit("attention_sweep needs timestamp queries (a GPU with timestamp-query)")
    rows = []
    for spec in QUICK_SHAPES if args.quick else SHAPES:
        rows.append(sweep(device, torch, spec, args.top, args.seconds, 3 if args.quick else 7))
        if args.json:
            _harness.write_json(args.json, {"adapter": device.name, "rows": rows})
        print_row(rows[-1])
    worst = max(e for r in rows for e in r["ragged_err"].values() if isinstance(e, float))
    print(f"worst ragged error vs torch float64 over all timed plans: {worst:.2e}")


def print_row(r: dict[str, Any]) -> None:
    torch_ms = (r.get("torch_gpu_ms", math.nan), r.get("torch_wall_ms", math.nan))
    print(f"{r['shape']:>18} torch {torch_ms[0]:7.3f}/{torch_ms[1]:7.3f}"
          f" | old {r['old_gpu_ms']:7.3f}"
          f" | model {r['model']['gpu_ms']:7.3f}/{r['model']['wall_ms']:7.3f}"
          f" | best {r['best_gpu_ms']:7.3f} ({r['plans_timed']} timed)"
          f" | wall ratio {torch_ms[1] / r['model']['wall_ms']:5.2f}", flush=True)
    rounds = r["rounds_gpu_ms"]
    for name, key in (("old", "old_plan"), ("model", "model_plan"), ("best", "best_plan")):
        print(f"{'':>18} {name:>5} {rounds[r[key]]:7.3f} {r[key]}", flush=True)


if __name__ == "__main__":
    main()
