"""Quantized linear layers: the GEMM that reads Q8_0 / Q4_K / Q5_0 blocks itself (gpustd.nn.
quantized_linear, "fused") against dequantizing into a scratch tensor first (the
`materialize` path, "scratch") and against the float16 weight ("float"), on the shapes of SD
1.5's and SDXL's linear layers at 64x64 / 128x128 latents (tokens x in -> out; Q4_K only
where `in` is a multiple of 256, as GGUF writers keep the others in Q8_0 or F16).

Per row: median GPU time (timestamp queries, else wall) of one layer, and the bytes the call
holds above its inputs and output at its peak (memory_stats: the scratch's expanded weight).
Every path is checked against float64 numpy of the dequantized weight before it is timed.
The "fused" path runs on the portable GEMM kernel even where f16 GEMMs have matrix units
(Dawn); the default (gpustd.nn.quantized_linear.fuses) keeps the scratch path there.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import gpucore
from gpustd import Tensor, linalg
from gpustd.nn.linear import linear
from gpustd.nn.quantized_linear import quantized_linear
from gpustd.quant import FORMATS, QuantizedTensor, dequantize

from . import _harness

COLUMNS = ["format", "dtype", "m", "k", "n", "path", "gpu_ms", "vs_float", "vs_scratch",
           "extra_mib", "weight_mib"]
# (tokens, in, out): attention projections, GEGLU and FF-out of SD 1.5 (64x64 latents: 4096
# tokens at level 1) and SDXL (128x128: 4096 tokens at level 2, 1024 at level 3)
SHAPES = [(4096, 320, 320), (4096, 320, 2560), (4096, 1280, 320), (1024, 1280, 1280),
          (1024, 1280, 10240), (1024, 5120, 1280), (4096, 640, 640), (4096, 2560, 640)]
QUICK = [(37, 256, 45), (64, 512, 96)]


def _blocks(rng: np.random.Generator, format: str, n: int, k: int) -> np.ndarray:
    """Random blocks with small f16 scales (the timing does not depend on the values)."""
    spec = FORMATS[format]
    raw = rng.integers(0, 256, (n * k // spec.values, spec.nbytes), dtype=np.uint8)
    for at in ((0, 2) if format == "q4_k" else (0,)):
        scales = (rng.standard_normal(len(raw)) * 0.01).astype(np.float16)
        raw[:, at:at + 2] = scales.view(np.uint8).reshape(-1, 2)
    return raw


def _extra_bytes(fn: Any, device: gpucore.Device) -> int:
    fn()
    device.synchronize()
    device.reset_peak_memory()
    before = device.memory_stats().allocated
    out = fn()
    device.synchronize()
    return device.memory_stats().peak_allocated - before - out.nbytes


def _rows(device: gpucore.Device, format: str, dtype: Any, shape: tuple[int, int, int],
          repeat: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    m, k, n = shape
    weight = QuantizedTensor.from_bytes(_blocks(rng, format, n, k), (n, k), format,
                                        dtype=dtype, device=device)
    dense = dequantize(weight)
    x = Tensor.from_numpy(rng.standard_normal((m, k)).astype(dtype), device=device)
    want = x.numpy()[:8].astype(np.float64) @ dense.numpy().astype(np.float64).T
    paths = {"float": lambda: linalg.matmul(x, dense, trans_b=True),
             "scratch": lambda: linear(x, dequantize(weight)),
             "fused": lambda: quantized_linear(x, weight)}
    rows, times = [], {}
    for path, fn in paths.items():
        got = fn().numpy()[:8].astype(np.float64)
        error = np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)
        if error > (1e-4 if np.dtype(dtype) == np.float32 else 2e-2):
            raise AssertionError(f"{format} {shape} {path}: relative error {error}")
        timing = _harness.ours_ms(fn, device, repeat=repeat)
        times[path] = ms = (timing["gpu_ms"] if math.isfinite(timing["gpu_ms"])
                            else timing["wall_ms"])
        rows.append({"format": format, "dtype": np.dtype(dtype).name, "m": m, "k": k, "n": n,
                     "path": path, "gpu_ms": ms, "extra_mib": _extra_bytes(fn, device) / 2**20,
                     "weight_mib": (dense.nbytes if path == "float" else weight.nbytes) / 2**20})
    for row in rows:
        row["vs_float"] = row["gpu_ms"] / times["float"]
        row["vs_scratch"] = row["gpu_ms"] / times["scratch"]
    return rows


def run(quick: bool = False) -> dict[str, Any]:
    device = gpucore.default_device()
    rng = np.random.default_rng(0)
    dtype = np.float16 if device.has_f16 else np.float32
    repeat = 3 if quick else 20
    rows = []
    for format in ("q8_0", "q4_k", "q5_0"):
        for shape in QUICK if quick else SHAPES:
            if shape[1] % FORMATS[format].values == 0:
                rows += _rows(device, format, dtype, shape, repeat, rng)
    return {
        "benchmark": "quant_gemm",
        "environment": _harness.environment(device),  # names the runtime (wgpu / dawn)
        "notes": "gpu_ms: median of one linear layer (m tokens x k in -> n out); vs_float / "
                 "vs_scratch: time over the float16 weight's / the dequantize-then-GEMM "
                 "path's; extra_mib: bytes held above the inputs and output at the call's "
                 "peak (the scratch path's expanded weight); weight_mib: the weight as kept",
        "columns": COLUMNS,
        "rows": rows,
    }
