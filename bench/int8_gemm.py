"""W8A8 GEMMs (gpustd.nn.int8_linear) beside our f16 GEMM, cuBLAS fp16 and torch._int_mm on
the same GPU, at 4096^3 and FLUX's shapes (M x K x N, x @ w.T as a linear layer stores w).

Per shape, rows for: our f16 linear (matrix units under Dawn); the W8A8 GEMM alone on
pre-quantized operands in each tile (gpustd/gemm/int8_units.TILES, the rule's marked) and the
whole int8_linear (the activations' quantization included); the activations' quantization
alone; cuBLAS fp16 and torch._int_mm (int8 -> int32, no scales) where torch.cuda runs.
Before timing, each int8 result is checked against numpy's product of the same quantized
operands (exact sums; `mismatch` counts outputs more than one f16 step off after the f16
epilogue, on the first 256 rows), and its error against float64 of the unquantized operands
is stated (`err`: max |out - ref| / max |ref|, `rms`: RMS error / RMS of ref), f16's beside it.
Run with GPUCORE_RUNTIME=dawn for the matrix units.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import gpucore
from gpustd import Tensor
from gpustd.gemm import int8_units, portable
from gpustd.gemm.dispatch import record_gemm_w8a8, w8a8_on_matrix_units
from gpustd.nn.int8_linear import int8_linear, quantize_rows, quantize_weight
from gpustd.nn.linear import linear

from . import _harness

COLUMNS = ["m", "k", "n", "path", "tile", "gpu_ms", "TFLOPs", "vs_cublas", "err", "rms",
           "mismatch"]
SHAPES = [(4096, 4096, 4096), (4608, 3072, 3072), (4608, 3072, 12288), (4608, 12288, 3072)]
QUICK = [(64, 96, 80), (130, 200, 70)]
_CHECK_ROWS = 256


def _errors(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    diff = out[:len(ref)].astype(np.float64) - ref
    return {"err": float(np.abs(diff).max() / np.abs(ref).max()),
            "rms": float(np.sqrt((diff ** 2).mean() / (ref ** 2).mean()))}


def _mismatch(out: np.ndarray, a8: Tensor, sa: Tensor, w8: Any) -> int:
    """Outputs of the first rows more than one f16 step from the exact sums' epilogue."""
    k = w8.shape[1]
    rows = min(_CHECK_ROWS, out.shape[0])
    qa = a8.numpy().view(np.int8).reshape(a8.shape[0], -1)[:rows, :k].astype(np.float64)
    qb = w8.words.numpy().view(np.int8).reshape(w8.shape[0], -1)[:, :k].astype(np.float64)
    sums = (qa @ qb.T).astype(np.float32)
    want = (sums * sa.numpy()[:rows, None] * w8.scales.numpy()[None, :]).astype(np.float16)
    got = out[:rows]
    step = np.spacing(np.abs(want)).astype(np.float32)
    return int((np.abs(got.astype(np.float32) - want.astype(np.float32)) > step).sum())


def _shape_rows(device: gpucore.Device, torch: Any, shape: tuple[int, int, int], repeat: int,
                rng: np.random.Generator, quick: bool) -> list[dict[str, Any]]:
    m, k, n = shape
    x = rng.standard_normal((m, k), dtype=np.float32).astype(np.float16)
    w = (rng.standard_normal((n, k), dtype=np.float32) / np.sqrt(k)).astype(np.float16)
    ref = x[:_CHECK_ROWS].astype(np.float64) @ w.astype(np.float64).T
    xt, wt = Tensor.from_numpy(x, device=device), Tensor.from_numpy(w, device=device)
    flops = 2 * m * k * n
    rows: list[dict[str, Any]] = []

    def row(path: str, tile: str, ms: float, **extra: Any) -> None:
        rows.append({"m": m, "k": k, "n": n, "path": path, "tile": tile, "gpu_ms": ms,
                     "TFLOPs": flops / (ms * 1e9), **extra})

    f16_out = linear(xt, wt).numpy()
    row("f16 linear", "", _harness.ours_ms(lambda: linear(xt, wt), device,
                                           repeat=repeat)["gpu_ms"], **_errors(f16_out, ref))
    w8 = quantize_weight(wt)
    a8, sa = quantize_rows(xt)
    out = int8_linear(xt, w8).numpy()
    checks = {**_errors(out, ref), "mismatch": _mismatch(out, a8, sa, w8)}
    row("w8a8 linear", "rule", _harness.ours_ms(lambda: int8_linear(xt, w8), device,
                                                repeat=repeat)["gpu_ms"], **checks)
    row("quantize rows", "", _harness.ours_ms(lambda: quantize_rows(xt), device,
                                              repeat=repeat)["gpu_ms"])
    c = Tensor.empty((m, n), np.float16, device=device)
    kw = a8.shape[1]
    no_bias = portable.no_bias(device, np.float16)
    if w8a8_on_matrix_units(device, np.float16):
        rule = int8_units.choose_tile(m, n, k)
        for name, tile in int8_units.TILES.items():
            if quick and tile != rule:
                continue
            if tile.shared_bytes() > device.limits["max-compute-workgroup-storage-size"]:
                continue

            def gemm(tile: Any = tile) -> None:
                int8_units.record_w8a8_matrix(
                    a8.buffer, w8.words.buffer, sa.buffer, w8.scales.buffer, no_bias,
                    c.buffer, m=m, n=n, kw=kw, has_bias=False, beta=0.0, tile=tile)
            gemm()
            tile_checks = {**_errors(c.numpy(), ref), "mismatch": _mismatch(c.numpy(), a8, sa,
                                                                              w8)}
            row("w8a8 gemm", name + (" (rule)" if tile == rule else ""),
                _harness.ours_ms(gemm, device, repeat=repeat)["gpu_ms"], **tile_checks)
    else:
        row("w8a8 gemm", "portable", _harness.ours_ms(lambda: record_gemm_w8a8(
            a8.buffer, w8.words.buffer, sa.buffer, w8.scales.buffer, None, c.buffer, m=m, n=n,
            kw=kw), device, repeat=repeat)["gpu_ms"])
    if torch is not None:
        tx, tw = torch.from_numpy(x).cuda(), torch.from_numpy(w).cuda()
        cublas = _harness.torch_cuda_ms(lambda: torch.matmul(tx, tw.T), repeat=repeat)
        row("cublas fp16", "", cublas)
        try:
            qx = torch.from_numpy(a8.numpy().view(np.int8).reshape(m, -1)[:, :k].copy()).cuda()
            qw = torch.from_numpy(
                w8.words.numpy().view(np.int8).reshape(n, -1)[:, :k].copy()).cuda()
            row("torch._int_mm", "", _harness.torch_cuda_ms(
                lambda: torch._int_mm(qx, qw.T), repeat=repeat))
        except Exception as exc:
            rows.append({"m": m, "k": k, "n": n, "path": "torch._int_mm",
                         "tile": f"did not run: {type(exc).__name__}"})
        for r in rows:
            if r.get("gpu_ms"):
                r["vs_cublas"] = cublas / r["gpu_ms"]
    return rows


def _exact(device: gpucore.Device, rng: np.random.Generator) -> bool:
    """Whether the W8A8 kernel's result equals the exact sums' on a ragged 130 x 200 x 70
    product (on the matrix units: whether subgroupMatrixLoad reads i8 offsets and strides in
    elements, as the generator writes them)."""
    x = Tensor.from_numpy(rng.standard_normal((130, 200)).astype(np.float16), device=device)
    w = quantize_weight(Tensor.from_numpy(rng.standard_normal((70, 200)).astype(np.float16),
                                          device=device))
    a8, sa = quantize_rows(x)
    return _mismatch(int8_linear(x, w).numpy(), a8, sa, w) == 0


def run(quick: bool = False) -> dict[str, Any]:
    device = gpucore.default_device()
    torch = _harness.torch_cuda()
    rng = np.random.default_rng(0)
    exact = _exact(device, rng)
    print(f"W8A8 kernel exact on a ragged product: {exact}")
    repeat = 3 if quick else 20
    rows = []
    for shape in QUICK if quick else SHAPES:
        rows += _shape_rows(device, torch, shape, repeat, rng, quick)
    return {
        "benchmark": "int8_gemm",
        "environment": _harness.environment(device),
        "exact": exact,
        "matrix_units": w8a8_on_matrix_units(device, np.float16),
        "columns": COLUMNS,
        "rows": rows,
    }
