"""GEMM throughput: gpustd.linalg.matmul vs torch (cuBLAS) on the same GPU, or numpy on the CPU.

Shapes are M x K x N: square ones and those of a Stable Diffusion UNet's linear layers at
64x64 latents ((tokens x in) @ (in x out)); each in float32 and float16, and in the two layouts
a network uses: "nn" (x @ w) and "nt" (x @ w.T, a linear layer's weight as stored).
float16 runs on the matrix units (gpustd/gemm/matrix_units.py) where the device has
subgroup matrices: run with GPUCORE_RUNTIME=dawn (the "kernel" column says which ran).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import gpucore
from gpustd import Tensor, linalg
from gpustd.gemm import matrix_units as _gemm_subgroup_matrix

from . import _harness

COLUMNS = ["dtype", "m", "k", "n", "layout", "kernel", "dispatches", "ours_gpu_ms", "ours_wall_ms",
           "ours_encode_ms", "ours_TFLOPs", "baseline", "baseline_ms", "baseline_TFLOPs", "ratio"]
SQUARE = [256, 512, 1024, 2048, 4096]
# The last three: level 2's attention projection and GEGLU (1024 tokens x 640 channels), and
# the implicit GEMM of a 3x3 conv 320 -> 320 at 2x64x64 written as a plain GEMM (pixels x
# 9*320 x 320), the bound for what conv2d's gather can reach.
SD_SHAPES = [(4096, 320, 320), (4096, 640, 640), (4096, 1280, 320), (1024, 1280, 1280),
             (77, 768, 320), (4096, 320, 1280), (1024, 640, 640), (1024, 640, 5120),
             (8192, 2880, 320)]
QUICK = [(64, 64, 64), (77, 96, 40)]


def _tflops(m: int, k: int, n: int, ms: float) -> float:
    return 2 * m * k * n / (ms * 1e9)


def _baseline(torch: Any, a: np.ndarray, b: np.ndarray, layout: str,
              repeat: int) -> tuple[str, float]:
    if torch is not None:
        torch.backends.cuda.matmul.allow_tf32 = False  # true fp32, as our kernel computes
        ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
        out = torch.empty((a.shape[0], b.shape[0] if layout == "nt" else b.shape[1]),
                          dtype=ta.dtype, device="cuda")
        rhs = tb.T if layout == "nt" else tb
        ms = _harness.torch_cuda_ms(lambda: torch.matmul(ta, rhs, out=out), repeat=repeat)
        return f"torch-cuda-{a.dtype}", ms
    # numpy has no fast float16 GEMM; compare with its float32 one, which is what one would use.
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    rhs32 = b32.T if layout == "nt" else b32
    out = np.empty((a.shape[0], rhs32.shape[1]), np.float32)
    return "numpy-cpu-float32", _harness.numpy_ms(lambda: np.matmul(a32, rhs32, out=out),
                                                  repeat=max(3, repeat // 4))


def _row(device: gpucore.Device, torch: Any, dtype: Any, shape: tuple[int, int, int],
         layout: str, repeat: int, rng: np.random.Generator) -> dict[str, Any]:
    m, k, n = shape
    a = rng.standard_normal((m, k), dtype=np.float32).astype(dtype)
    b = rng.standard_normal((n, k) if layout == "nt" else (k, n), dtype=np.float32).astype(dtype)
    ga, gb = Tensor.from_numpy(a, device=device), Tensor.from_numpy(b, device=device)
    out = Tensor.empty((m, n), dtype, device=device)
    trans_b = layout == "nt"

    def ours() -> None:
        linalg.matmul(ga, gb, trans_b=trans_b, out=out)

    timing = _harness.ours_ms(ours, device, repeat=repeat)
    # A wrong kernel must not produce a benchmark: check a few rows against float64.
    rows = np.linspace(0, m - 1, num=min(m, 8), dtype=int)
    rhs = (b.T if trans_b else b).astype(np.float64)
    expected = a[rows].astype(np.float64) @ rhs
    got = out.numpy()[rows].astype(np.float64)
    err = np.max(np.abs(got - expected)) / max(np.max(np.abs(expected)), 1e-30)
    if err > (1e-4 if np.dtype(dtype) == np.float32 else 2e-2):
        raise AssertionError(f"gemm {m}x{k}x{n} {layout} {np.dtype(dtype)}: relative error {err}")
    ours_ms = timing["gpu_ms"] if math.isfinite(timing["gpu_ms"]) else timing["wall_ms"]
    name, base_ms = _baseline(torch, a, b, layout, repeat)
    matrix_units = np.dtype(dtype) == np.float16 and _gemm_subgroup_matrix.available(device)
    return {"dtype": np.dtype(dtype).name, "m": m, "k": k, "n": n, "layout": layout,
            "kernel": "subgroup-matrix" if matrix_units else "portable",
            "dispatches": timing["dispatches"], "ours_gpu_ms": timing["gpu_ms"],
            "ours_wall_ms": timing["wall_ms"], "ours_encode_ms": timing["encode_ms"],
            "ours_TFLOPs": _tflops(m, k, n, ours_ms), "baseline": name, "baseline_ms": base_ms,
            "baseline_TFLOPs": _tflops(m, k, n, base_ms), "ratio": base_ms / ours_ms}


def _warm_up(device: gpucore.Device, rng: np.random.Generator, size: int) -> None:
    """Lift the GPU out of its idle clocks, or the first row measures the ramp-up."""
    x = Tensor.from_numpy(rng.standard_normal((size, size), dtype=np.float32), device=device)
    for _ in range(20):
        linalg.matmul(x, x)
    device.synchronize()


def run(quick: bool = False) -> dict[str, Any]:
    device = gpucore.default_device()
    torch = _harness.torch_cuda()
    rng = np.random.default_rng(0)
    _warm_up(device, rng, 64 if quick else 1024)
    shapes = QUICK if quick else [(s, s, s) for s in SQUARE] + SD_SHAPES
    layouts = ["nn"] if quick else ["nn", "nt"]
    dtypes = [np.float32] + ([np.float16] if device.has_f16 else [])
    repeat = 3 if quick else 20
    rows = [_row(device, torch, dtype, shape, layout, repeat, rng)
            for dtype in dtypes for shape in shapes for layout in layouts]
    return {
        "benchmark": "gemm",
        "environment": _harness.environment(device),  # names the runtime (wgpu / dawn)
        "notes": "shapes are m x k x n; ms are medians; ours_gpu_ms from timestamp queries "
                 "(ours_wall_ms adds submit + wait); TFLOPs = 2mkn / time; ratio = "
                 "baseline_ms / ours (>1: we are faster). torch runs fp32 with TF32 off; its "
                 "fp16 uses tensor cores, which ours reach only through Dawn's subgroup "
                 "matrices (kernel 'subgroup-matrix', GPUCORE_RUNTIME=dawn).",
        "columns": COLUMNS,
        "rows": rows,
    }
