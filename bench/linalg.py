"""QR and SVD: gpustd.linalg.qr / svd against torch.linalg on the same GPU, wall time.

Wall time of one call until its results are on the device (ours: record + submit + wait,
including the SVD's one read-back per Jacobi sweep; torch: call + cuda.synchronize), median
over repeats after a warm-up. float32 random gaussian inputs; square sizes and a batch of small
matrices. Without CUDA the baseline is numpy on the CPU. Every timed result is checked first:
reconstruction error relative to max |A| in float64 on the host.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import gpucore
from gpustd import Tensor, linalg

from . import _harness

COLUMNS = ["op", "shape", "ours_ms", "baseline", "baseline_ms", "ratio", "rebuild_err",
           "orth_err"]
CASES = [("qr", (256, 256)), ("qr", (1024, 1024)), ("qr", (512, 64, 64)),
         ("svd", (256, 256)), ("svd", (1024, 1024)), ("svd", (512, 64, 64))]
QUICK = [("qr", (40, 33)), ("qr", (8, 16, 16)), ("svd", (40, 33)), ("svd", (8, 16, 16))]


def _wall_ms(fn: Callable[[], Any], sync: Callable[[], None], repeat: int) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _errors(op: str, a: np.ndarray, result: Any) -> tuple[float, float]:
    """(reconstruction, orthogonality) error of the first matrix of the batch, in float64."""
    def first(x: Any, matrix: bool = True) -> np.ndarray:
        x = np.asarray(x, np.float64)
        return x.reshape(-1, *x.shape[-2:])[0] if matrix else x.reshape(-1, x.shape[-1])[0]

    if op == "qr":
        q, r = (first(t.numpy()) for t in result)
        rebuilt, basis = q @ r, q
    else:
        u, vh = first(result.U.numpy()), first(result.Vh.numpy())
        rebuilt, basis = (u * first(result.S.numpy(), matrix=False)) @ vh, u
    a0 = first(a)
    orth = np.max(np.abs(basis.T @ basis - np.eye(basis.shape[1])))
    return float(np.max(np.abs(rebuilt - a0)) / np.max(np.abs(a0))), float(orth)


def _baseline(torch: Any, op: str, a: np.ndarray, repeat: int) -> tuple[str, float]:
    if torch is not None:
        ta = torch.from_numpy(a).cuda()
        fn = ((lambda: torch.linalg.qr(ta)) if op == "qr"
              else (lambda: torch.linalg.svd(ta, full_matrices=False)))
        return "torch-cuda", _wall_ms(fn, torch.cuda.synchronize, repeat)
    fn = (lambda: np.linalg.qr(a)) if op == "qr" else (lambda: np.linalg.svd(a, False))
    return "numpy-cpu", _wall_ms(fn, lambda: None, max(1, repeat // 2))


def _row(device: gpucore.Device, torch: Any, op: str, shape: tuple[int, ...], repeat: int,
         rng: np.random.Generator) -> dict[str, Any]:
    a = rng.standard_normal(shape, dtype=np.float32)
    ga = Tensor.from_numpy(a, device=device)
    call = ((lambda: linalg.qr(ga)) if op == "qr"
            else (lambda: linalg.svd(ga, full_matrices=False)))
    rebuild, orth = _errors(op, a, call())
    if rebuild > 1e-4 or orth > 1e-4:  # a wrong result must not produce a benchmark
        raise AssertionError(f"{op} {shape}: reconstruction {rebuild:.2g}, orthogonality "
                             f"{orth:.2g}")
    ours = _wall_ms(call, device.synchronize, repeat)
    name, base = _baseline(torch, op, a, repeat)
    return {"op": op, "shape": "x".join(map(str, shape)), "ours_ms": ours, "baseline": name,
            "baseline_ms": base, "ratio": base / ours, "rebuild_err": rebuild,
            "orth_err": orth}


def run(quick: bool = False) -> dict[str, Any]:
    device = gpucore.default_device()
    torch = _harness.torch_cuda()
    rng = np.random.default_rng(0)
    cases = QUICK if quick else CASES
    rows = []
    for op, shape in cases:
        repeat = 2 if quick else (3 if max(shape) >= 1024 else 5)
        rows.append(_row(device, torch, op, shape, repeat, rng))
    return {
        "benchmark": "linalg",
        "environment": _harness.environment(device),
        "notes": "wall ms per call (median; ours includes the SVD's read-back per Jacobi "
                 "sweep), float32 gaussian inputs, shapes are (batch x) m x n; qr: reduced "
                 "Q and R (torch.linalg.qr default); svd: full_matrices=False, U, S and Vh; "
                 "ratio = baseline_ms / ours_ms (>1: we are faster); errors are the first "
                 "matrix's max |rebuilt - A| / max |A| and max |X^T X - I| (Q or U).",
        "columns": COLUMNS,
        "rows": rows,
    }
