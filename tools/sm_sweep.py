"""Sweep the subgroup-matrix kernels' tile variants beside torch fp16 on the same GPU.

    GPUCORE_RUNTIME=dawn python -m tools.sm_sweep [--json PATH] [--conv] [--budget-s S]
    GPUCORE_RUNTIME=dawn GPUCORE_DAWN_TOGGLES=disable_robustness \\
        python -m tools.sm_sweep --top 3 --from PATH [--json PATH2] [--conv]

GEMM: every variant of VARIANTS (gpustd/gemm/matrix_codegen.MatrixTile) is first checked
against float64 on a product ragged in every dimension (200 x 328 x 184, nn and nt layouts,
the same kernels as the timed ones), then timed on SHAPES: GPU time by timestamp queries and
wall time (record + submit + wait), medians, beside torch's fp16 matmul (cuBLAS, CUDA events
and wall). `--top N --from PATH` re-times only each shape's N best variants of an earlier
run (e.g. with other Dawn toggles). Conv (--conv): the SD UNet's 3x3 convolutions on every
CONV_TILES tile unsplit, choose_conv_tile's pick, the 64x64 tile in several K splits where
tile_splits splits it (`--only none --conv`: the convs alone), the portable f16 kernel, beside
torch fp16 cuDNN (NCHW), each checked against torch's float32 conv of the same f16 inputs.
A tuning tool: it needs a Dawn adapter with subgroup matrices, timestamps and torch CUDA.

Measured on an H100 (2026-11-23, two runs; TFLOP/s by timestamp queries, medians; columns:
4096^3 nn, 4096^3 nt, then nt 4096x640x640, 1024x1280x1280, 4096x1280x320, 4096x320x1280,
8192x320x320; variants by MatrixTile.name: tile / subgroups / fragments per subgroup / BK, w8 =
8 f16 per global load, db = double-buffered; every one within 4.4e-4 of float64, acc16 1.5e-3).
cuBLAS's medians for the 0.02-0.1 ms shapes moved 2-4x between runs: compare within a run.
  Run 1, default toggles:
    128x128/2x4sg/4x2fr/k32         63.4  59.8  40.2  44.1  44.3  42.5  30.7
    128x128/2x4sg/4x2fr/k32/w8      46.0  48.0  33.4  35.5  36.0  37.1  27.3
    128x128/2x2sg/4x4fr/k32/w8      33.8  39.4  24.3  18.8  18.7  20.5  20.4
    128x256/2x4sg/4x4fr/k32/w8      49.8  51.0  27.7  16.9  16.7  24.8  24.7
    256x128/4x2sg/4x4fr/k32/w8      50.6  52.4  28.6  17.1  17.1  26.2  23.5
    128x128/2x4sg/4x2fr/k32/db/w8   37.2  39.2  26.1  26.9  27.2  28.9  22.1
    128x128/2x4sg/4x2fr/k64/w8      27.2  36.5  23.3  20.5  20.2  24.1  17.9
    128x128/2x2sg/4x4fr/k64/w8      36.5  38.7  26.5  28.6  28.6  28.8  21.1
    64x64/2x2sg/2x2fr/k32/w8        36.5  28.7  29.2  22.9  22.7  30.1  23.8
    64x128/2x2sg/2x4fr/k32/w8       38.7  38.9  27.8  29.6  29.9  31.9  23.4
    128x64/2x2sg/4x2fr/k32/w8       36.1  36.5  26.1  27.0  27.1  30.3  21.5
    64x128/2x4sg/2x2fr/k32/w8       32.4  38.9  34.6  28.3  28.9  35.8  28.7
    128x64/4x2sg/2x2fr/k32/w8       31.9  38.5  35.0  28.4  28.1  35.7  27.7
    64x64/2x2sg/2x2fr/k32           56.6  58.7  52.0  48.8  48.1  44.2  37.0
    64x64/2x2sg/2x2fr/k32/db/w8     25.8  26.4  26.7  22.7  22.2  28.0  22.1
    128x128/2x4sg/4x2fr/k32/w8/pad0  32.6  35.0  23.5  24.5  24.9  27.7  20.5
    128x128/2x4sg/4x2fr/k32/w8/acc16  46.4  47.3  32.6  35.4  35.4  36.4  26.8
    128x128/2x2sg/4x4fr/k32/db/w8   20.6  22.5  15.7  18.1  17.5  17.1  13.8
    torch fp16 (cuBLAS)            627.4 684.3  68.5 103.0  72.9  77.3  55.2
  Run 1, disable_robustness:
    128x128/2x4sg/4x2fr/k32/w8      58.0  56.8  42.3  45.6  45.6  44.5  32.7
    64x64/2x2sg/2x2fr/k32/w8        46.0  46.9  48.1  49.0  48.7  43.3  37.7
    128x128/2x4sg/4x2fr/k32         85.9  85.3  55.9  61.6  62.3  55.5  39.4
    64x64/2x2sg/2x2fr/k32           73.3  75.7  66.5  71.5  71.2  57.5  48.1
    torch fp16 (cuBLAS)            667.8 675.9  93.2  82.0  89.0  86.5  43.2
  Run 2, default toggles:
    128x128/2x4sg/4x2fr/k32         64.2  59.0  40.7  43.9  44.5  42.6  30.8
    64x64/2x2sg/2x2fr/k32           56.3  58.7  51.9  48.7  47.9  44.2  37.2
    128x128/2x4sg/4x2fr/k16         67.5  72.3  40.2  43.4  43.2  43.7  31.3
    128x128/2x4sg/4x2fr/k32/pad16   57.7  55.5  37.6  40.6  41.0  40.5  29.2
    64x64/2x2sg/2x2fr/k16           78.2  74.1  46.3  47.4  46.8  50.3  37.3
    32x64/2x2sg/1x2fr/k32           49.7  48.7  41.4  35.5  35.5  39.7  34.9
    64x32/2x2sg/2x1fr/k32           43.6  46.1  39.6  36.4  33.5  37.5  32.7
    64x64/2x2sg/2x2fr/k32/db        31.9  34.4  34.0  28.1  27.3  34.0  26.6
    torch fp16 (cuBLAS)            673.5 576.2  34.5 105.4 108.5  98.4  48.3
  Run 2, enable_integer_range_analysis_in_robustness:
    128x128/2x4sg/4x2fr/k32         64.6  58.9  40.6  44.2  44.2  42.3  30.8
    64x64/2x2sg/2x2fr/k32           56.7  58.7  51.9  48.6  48.5  44.5  37.1
    torch fp16 (cuBLAS)            716.9 714.2 130.6 128.3  94.0  88.9  63.7
  Conv 3x3, SM tiles and the portable f16 kernel (run 2, default toggles), GPU ms / wall ms;
  torch fp16 cuDNN NCHW (CUDA events / wall). * = choose_conv_tile; conv2d sends the last two
  to the portable kernel (MIN_TILES):
    2x320x64x64->320: torch 0.087/0.089
      portable 0.701/0.976 128x128 0.455/0.648 64x64* 0.445/0.631 32x32 0.617/0.804
    2x640x32x32->640: torch 0.097/0.092
      portable 0.663/0.928 128x128 0.462/0.641 64x64* 0.494/0.789 32x32 0.630/0.842
    2x1280x16x16->1280: torch 0.158/0.161
      portable 0.663/0.952 128x128 0.948/1.154 64x64* 0.779/0.946 32x32 0.666/0.834
    2x1280x8x8->1280: torch 0.138/0.145
      portable 0.206/0.590 128x128 0.968/1.192 64x64* 0.719/0.872 32x32 0.510/0.700
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Any

import numpy as np

import gpucore
from bench import _harness
from gpustd import Tensor
from gpustd.gemm import matrix_units as sm
from gpustd.gemm import plan as gemm_plan
from gpustd.nn import _conv_subgroup_matrix as csm
from gpustd.nn import conv as portable_conv

T = sm.MatrixTile
VARIANTS = [  # most telling first: a run out of time (--budget-s) drops the tail
    T(2, 4, 2, 2, prefetch=False), T(2, 2, 2, 2, prefetch=False),
    T(4, 2, 2, 4), T(4, 2, 2, 4, wide=True), T(4, 4, 2, 2, wide=True), T(4, 4, 2, 4, wide=True),
    T(4, 4, 4, 2, wide=True), T(4, 2, 2, 4, double=True, wide=True),
    T(4, 2, 2, 4, bk=64, wide=True), T(4, 4, 2, 2, bk=64, wide=True), T(2, 2, 2, 2, wide=True),
    T(2, 4, 2, 2, wide=True), T(4, 2, 2, 2, wide=True), T(2, 2, 2, 4, wide=True),
    T(2, 2, 4, 2, wide=True), T(2, 2, 2, 2), T(2, 2, 2, 2, double=True, wide=True),
    T(4, 2, 2, 4, pad=0, wide=True), T(4, 2, 2, 4, acc="f16", wide=True),
    T(4, 4, 2, 2, double=True, wide=True), T(4, 2, 2, 4, bk=16), T(4, 2, 2, 4, pad=16),
    T(2, 2, 2, 2, bk=16), T(1, 2, 2, 2), T(2, 1, 2, 2), T(2, 2, 2, 2, double=True),
    T(2, 4, 4, 2, wide=True), T(2, 2, 4, 4, wide=True), T(4, 4, 1, 1, wide=True),
    T(2, 2, 2, 2, bk=64, wide=True), T(4, 4, 2, 2, acc="f16", wide=True), T(2, 2, 1, 1),
]
# m, k, n, layout: the square benchmark and the SD 1.5 UNet's linear layers (x @ w.T, "nt")
SHAPES = [(4096, 4096, 4096, "nn"), (4096, 4096, 4096, "nt"), (4096, 640, 640, "nt"),
          (1024, 1280, 1280, "nt"), (4096, 1280, 320, "nt"), (4096, 320, 1280, "nt"),
          (8192, 320, 320, "nt")]
CHECK = (200, 328, 184)
# n, c_in, h, w, c_out: the SD 1.5 UNet's 3x3 convolutions (batch 2 for CFG), padding 1
CONVS = [(2, 320, 64, 64, 320), (2, 640, 32, 32, 640), (2, 1280, 16, 16, 1280),
         (2, 1280, 8, 8, 1280), (2, 2560, 16, 16, 1280)]


def _gemm_call(device: gpucore.Device, tile: T, m: int, k: int, n: int, layout: str,
               a: np.ndarray, b: np.ndarray) -> tuple[Any, Tensor]:
    """(record function, C tensor) for one variant on host operands a [m, k], b [k, n]/[n, k]."""
    ta, tb = Tensor.from_numpy(a, device=device), Tensor.from_numpy(b, device=device)
    c = Tensor.empty((m, n), np.float16, device=device)
    plan = gemm_plan.batch_plan((), (), (), m * k, k * n)

    def record() -> None:
        sm.record_gemm_matrix(ta.buffer, tb.buffer, c.buffer, tb.buffer, has_bias=False, m=m,
                              n=n, k=k, trans_a=False, trans_b=layout == "nt", alpha=1.0,
                              beta=0.0, plan=plan, tile=tile)
    return record, c


def _operands(rng: np.random.Generator, m: int, k: int, n: int, layout: str
              ) -> tuple[np.ndarray, np.ndarray]:
    a = rng.standard_normal((m, k)).astype(np.float16)
    b = rng.standard_normal((n, k) if layout == "nt" else (k, n)).astype(np.float16)
    return a, b


def check_gemm(device: gpucore.Device, tile: T) -> float:
    """Largest relative error against float64 over both layouts on the ragged CHECK size."""
    m, k, n = CHECK
    worst = 0.0
    for layout in ("nn", "nt"):
        a, b = _operands(np.random.default_rng(1), m, k, n, layout)
        record, c = _gemm_call(device, tile, m, k, n, layout, a, b)
        record()
        b64 = b.astype(np.float64).T if layout == "nt" else b.astype(np.float64)
        expected = a.astype(np.float64) @ b64
        worst = max(worst, float(np.abs(c.numpy() - expected).max() / np.abs(expected).max()))
    return worst


def _torch_ms(torch: Any, fn: Any) -> dict[str, float]:
    return {"torch_ms": _harness.torch_cuda_ms(fn, repeat=20),
            "torch_wall_ms": _harness.torch_wall_ms(fn, torch, 10)}


def gemm_baselines(torch: Any) -> dict[str, dict[str, float]]:
    """torch fp16 matmul per shape (cuBLAS)."""
    out = {}
    for m, k, n, layout in SHAPES:
        a = torch.randn(m, k, device="cuda", dtype=torch.float16)
        b = torch.randn(n, k, device="cuda", dtype=torch.float16)
        b = b.T if layout == "nt" else b.reshape(k, n)
        times = _torch_ms(torch, lambda a=a, b=b: a @ b)
        out[f"{m}x{k}x{n}/{layout}"] = {**times,
                                        "TFLOPs": 2 * m * k * n / (times["torch_ms"] * 1e9)}
    return out


def time_gemm(device: gpucore.Device, tile: T, baselines: dict[str, dict[str, float]]
              ) -> list[dict[str, Any]]:
    rows = []
    rng = np.random.default_rng(0)
    for m, k, n, layout in SHAPES:
        shape = f"{m}x{k}x{n}/{layout}"
        record, _ = _gemm_call(device, tile, m, k, n, layout, *_operands(rng, m, k, n, layout))
        ours = _harness.ours_ms(record, device, warmup=2, repeat=10, inner=3)
        base = {key: baselines[shape][key] for key in ("torch_ms", "torch_wall_ms")}
        rows.append({"variant": tile.name, "shape": shape, **ours, **base,
                     "TFLOPs": 2 * m * k * n / (ours["gpu_ms"] * 1e9),
                     "ratio": base["torch_ms"] / ours["gpu_ms"],
                     "wall_ratio": base["torch_wall_ms"] / ours["wall_ms"]})
    return rows


def time_conv(device: gpucore.Device, torch: Any, shape: tuple[int, ...]
              ) -> list[dict[str, Any]]:
    """Every conv tile, the chooser's pick and the portable kernel on one SD conv shape."""
    n, c_in, h, w, c_out = shape
    rng = np.random.default_rng(c_in)
    x = rng.standard_normal((n, c_in, h, w)).astype(np.float16)
    weight = (rng.standard_normal((c_out, c_in, 3, 3)) / math.sqrt(9 * c_in)).astype(np.float16)
    bias = rng.standard_normal(c_out).astype(np.float16)
    tx, tw, tb = (torch.from_numpy(v).cuda() for v in (x, weight, bias))
    expected = torch.nn.functional.conv2d(tx.float(), tw.float(), tb.float(),
                                          padding=1).cpu().numpy()
    base = _torch_ms(torch, lambda: torch.nn.functional.conv2d(tx, tw, tb, padding=1))
    gx, gw, gb = (Tensor.from_numpy(v, device=device) for v in (x, weight, bias))
    pixels = n * h * w
    plan = portable_conv._plan(c_out, pixels, 1, c_in * 9)
    calls = {"portable": lambda: portable_conv.conv2d(gx, gw, gb, padding=1,
                                                      _plan_override=plan)}
    chosen = csm.choose_conv_tile(c_out, pixels)
    for name, tile in csm.CONV_TILES.items():
        calls[f"{name}{' (chosen)' if tile == chosen else ''}"] = (
            lambda tile=tile: csm.conv2d_matrix(gx, gw, gb, stride=(1, 1), padding=(1, 1),
                                                dilation=(1, 1), out_hw=(h, w), tile=tile,
                                                splits=1))
    small = csm.CONV_TILES["64x64"]
    default = csm.tile_splits(c_out, pixels, c_in * 9, small)
    for splits in sorted({2, 4, 8, 14, default} - {1} if default > 1 else set()):
        calls[f"64x64 split {splits}{' (chosen)' if splits == default else ''}"] = (
            lambda splits=splits: csm.conv2d_matrix(
                gx, gw, gb, stride=(1, 1), padding=(1, 1), dilation=(1, 1), out_hw=(h, w),
                tile=small, splits=splits))
    flops = 2 * pixels * c_out * c_in * 9
    rows = []
    for label, call in calls.items():
        error = float(np.abs(call().numpy() - expected).max() / np.abs(expected).max())
        ours = _harness.ours_ms(call, device, warmup=2, repeat=10, inner=3)
        rows.append({"shape": f"{n}x{c_in}x{h}x{w}->{c_out}", "kernel": label,
                     "rel_error": error, **ours, **base,
                     "TFLOPs": flops / (ours["gpu_ms"] * 1e9),
                     "ratio": base["torch_ms"] / ours["gpu_ms"],
                     "wall_ratio": base["torch_wall_ms"] / ours["wall_ms"]})
    return rows


def _top_variants(path: str, count: int) -> list[T]:
    """Each shape's `count` fastest variants in an earlier sweep's JSON, plus the shipped."""
    with open(path) as f:
        rows = json.load(f)["gemm"]
    keep = {t.name for t in sm.TILES.values()}
    for shape in {r["shape"] for r in rows}:
        best = sorted((r["gpu_ms"], r["variant"]) for r in rows if r["shape"] == shape)
        keep.update(name for _, name in best[:count])
    candidates = {t.name: t for t in [*sm.TILES.values(), *VARIANTS]}
    return [t for name, t in candidates.items() if name in keep]


def _print_tables(result: dict[str, Any]) -> None:
    shapes = [f"{m}x{k}x{n}/{layout}" for m, k, n, layout in SHAPES]
    table = {(r["variant"], r["shape"]): r for r in result["gemm"]}
    print(f"\nGEMM TFLOP/s by timestamps ({result['toggles'] or 'default toggles'}); "
          "ratio = torch ms / ours")
    print(f"{'variant':<34} {'err':>7} " + " ".join(f"{s:>19}" for s in shapes))
    for name, error in result["checked"].items():
        cells = [table.get((name, s)) for s in shapes]
        print(f"{name:<34} {error:7.1e} " + " ".join(
            f"{c['TFLOPs']:8.1f} ({c['ratio']:4.2f})".rjust(19) if c else " " * 19
            for c in cells))
    print(f"{'torch fp16':<42} " + " ".join(
        f"{result['torch'][s]['TFLOPs']:8.1f} TFLOP/s".rjust(19) for s in shapes))
    for r in result.get("conv", []):
        print(f"conv {r['shape']:>22} {r['kernel']:<18} gpu {r['gpu_ms']:7.4f} ms "
              f"wall {r['wall_ms']:7.4f} | torch {r['torch_ms']:7.4f} wall "
              f"{r['torch_wall_ms']:7.4f} | {r['TFLOPs']:6.1f} TFLOP/s ratio {r['ratio']:4.2f} "
              f"wall {r['wall_ratio']:4.2f} err {r['rel_error']:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write every timing here (rewritten after each variant)")
    parser.add_argument("--top", type=int, help="only each shape's N best of --from")
    parser.add_argument("--from", dest="source", help="an earlier sweep's JSON (for --top)")
    parser.add_argument("--only", help="comma-separated variant names (MatrixTile.name)")
    parser.add_argument("--conv", action="store_true", help="also the SD 3x3 convolutions")
    parser.add_argument("--budget-s", type=float, default=1e9,
                        help="start no new variant after this many seconds")
    args = parser.parse_args()
    device = gpucore.default_device()
    torch = _harness.torch_cuda()
    if not (sm.available(device) and device.has_timestamps and torch is not None):
        raise SystemExit("sm_sweep needs a Dawn adapter with f16 subgroup matrices and "
                         "timestamp queries (GPUCORE_RUNTIME=dawn on a GPU), and torch CUDA")
    start = time.perf_counter()
    variants = _top_variants(args.source, args.top) if args.top else VARIANTS
    if args.only:
        variants = [t for t in variants if t.name in args.only.split(",")]
    limit = device.limits["max-compute-workgroup-storage-size"]
    result: dict[str, Any] = {"environment": _harness.environment(device),
                              "toggles": os.environ.get("GPUCORE_DAWN_TOGGLES", ""),
                              "checked": {}, "gemm": [], "skipped": {}}
    baselines = result["torch"] = gemm_baselines(torch)
    for tile in variants:
        if time.perf_counter() - start > args.budget_s:
            result["skipped"][tile.name] = "out of time"
            continue
        if tile.shared_bytes() > limit:
            result["skipped"][tile.name] = f"{tile.shared_bytes()} B of workgroup memory"
            continue
        try:
            error = check_gemm(device, tile)
        except Exception as e:  # a variant the compiler refuses is a result, not a stop
            result["skipped"][tile.name] = f"{type(e).__name__}: {e}"[:300]
            continue
        result["checked"][tile.name] = error
        if error < 2e-3:
            result["gemm"] += time_gemm(device, tile, baselines)
        print(f"{time.perf_counter() - start:6.1f} s  {tile.name}  err {error:.1e}", flush=True)
        if args.json:
            _harness.write_json(args.json, result)
    if args.conv:
        result["conv"] = [row for shape in CONVS for row in time_conv(device, torch, shape)]
    if args.json:
        _harness.write_json(args.json, result)
    print("skipped:", result["skipped"])
    _print_tables(result)


if __name__ == "__main__":
    main()
