"""FFT throughput: our WGSL FFTs vs cuFFT (torch.fft on the same GPU) or numpy.fft on the CPU.

Batched 1-D complex64 FFTs of 2^10..2^22 points (batches fill 2^24 points, so small sizes
load the whole GPU), one non-power-of-two length (Bluestein), a batched rfft and a 1024^2
fft2. GFLOP/s counts the conventional 5 n log2 n per complex transform (2.5 n log2 n for
real ones), whatever the algorithm.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

import gpucore
import gpustd
from gpustd import fft as gfft

from . import _harness

COLUMNS = ["case", "n", "batch", "ours_gpu_ms", "ours_wall_ms", "ours_GFLOPs", "baseline",
           "baseline_ms", "baseline_GFLOPs", "ratio"]


def _cases(quick: bool) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """(kind, shape, transformed axes sizes) per row."""
    total = 1 << (16 if quick else 24)
    sizes = [10, 12, 16] if quick else [10, 12, 14, 16, 18, 20, 22]
    cases: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    for bits in sizes:
        n = 1 << bits
        cases.append(("fft", (max(1, total // n), n), (n,)))
    cases.append(("fft", (max(1, total // 1000 // 4), 1000), (1000,)))
    rows = 1 << (8 if quick else 10)
    n = 1 << (12 if quick else 20)
    cases.append(("rfft", (max(1, total // n), n), (n,)))
    cases.append(("fft2", (rows, rows), (rows, rows)))
    return cases


def _flops(kind: str, shape: tuple[int, ...], sizes: tuple[int, ...]) -> float:
    points = math.prod(sizes)
    batch = math.prod(shape) // points
    per = 5 * points * math.log2(points)
    return batch * per * (0.5 if kind == "rfft" else 1.0)


def _data(kind: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    real = rng.standard_normal(shape, dtype=np.float32)
    if kind == "rfft":
        return real
    return (real + 1j * rng.standard_normal(shape, dtype=np.float32)).astype(np.complex64)


def _reference(kind: str, x: np.ndarray) -> np.ndarray:
    return {"fft": np.fft.fft, "rfft": np.fft.rfft, "fft2": np.fft.fft2}[kind](x)


def _warm_up(call: Any, device: gpucore.Device, *, seconds: float) -> None:
    """Keep the GPU busy for a while: an idle GPU's clocks ramp up during the first timings
    otherwise (the first row read 4x slow on an H200)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(10):
            call()
        device.synchronize()


def run(quick: bool = False) -> dict[str, Any]:
    device = gpucore.default_device()
    torch = _harness.torch_cuda()
    repeat = 3 if quick else 20
    rng = np.random.default_rng(0)
    rows = []
    for kind, shape, sizes in _cases(quick):
        x = _data(kind, shape, rng)
        ours = getattr(gfft, kind)
        x_gpu = gpustd.Tensor.from_numpy(x, device=device)
        out = ours(x_gpu)  # also compiles the pipelines and builds the twiddle tables

        def call(ours: Any = ours, x_gpu: gpustd.Tensor = x_gpu, out: gpustd.Tensor = out) -> None:
            ours(x_gpu, out=out)

        if not rows:
            _warm_up(call, device, seconds=0.1 if quick else 1.0)
        timing = _harness.ours_ms(call, device, repeat=repeat)
        expected = _reference(kind, x.astype(np.complex128 if kind != "rfft" else np.float64))
        err = np.abs(out.numpy() - expected).max() / np.abs(expected).max()
        if err > 1e-4:
            raise AssertionError(f"{kind} {shape}: relative error {err:.3g} vs numpy")
        ours_ms = timing["gpu_ms"] if np.isfinite(timing["gpu_ms"]) else timing["wall_ms"]
        flops = _flops(kind, shape, sizes)
        row: dict[str, Any] = {
            "case": kind, "n": "x".join(map(str, sizes)), "batch": math.prod(shape) //
            math.prod(sizes), "ours_gpu_ms": timing["gpu_ms"], "ours_wall_ms": timing["wall_ms"],
            "ours_GFLOPs": flops / (ours_ms * 1e6),
        }
        if torch is not None:
            tx = torch.from_numpy(x).cuda()
            fn = {"fft": torch.fft.fft, "rfft": torch.fft.rfft, "fft2": torch.fft.fft2}[kind]
            base_ms = _harness.torch_cuda_ms(lambda fn=fn, tx=tx: fn(tx), repeat=repeat)
            row["baseline"] = "torch.fft (cuFFT)"
            del tx
        else:
            ref = {"fft": np.fft.fft, "rfft": np.fft.rfft, "fft2": np.fft.fft2}[kind]
            base_ms = _harness.numpy_ms(lambda ref=ref, x=x: ref(x), repeat=min(repeat, 5))
            row["baseline"] = "numpy.fft (CPU)"
        row.update(baseline_ms=base_ms, baseline_GFLOPs=flops / (base_ms * 1e6),
                   ratio=base_ms / ours_ms)
        rows.append(row)
        del x_gpu, out
    return {
        "benchmark": "fft",
        "environment": _harness.environment(device),
        "notes": "ms are medians; ours_gpu_ms from timestamp queries (sum over the passes), "
                 "ours_wall_ms includes submit + wait; GFLOP/s = 5 n log2 n per complex "
                 "transform (half for rfft); ratio = baseline_ms / ours (>1: we are faster)",
        "columns": COLUMNS,
        "rows": rows,
    }
