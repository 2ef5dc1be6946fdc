"""vector_add bandwidth: our WGSL kernel vs numpy on the CPU and torch on the same GPU."""

from __future__ import annotations

from typing import Any

import numpy as np

import gpucore

from . import _harness

COLUMNS = ["n", "ours_gpu_ms", "ours_wall_ms", "ours_GBps", "torch_ms", "torch_GBps",
           "vs_torch", "numpy_ms", "numpy_GBps", "vs_numpy"]


def _gbps(n: int, ms: float) -> float:
    return 3 * n * 4 / (ms * 1e6)  # two reads + one write of float32


def run(quick: bool = False) -> dict[str, Any]:
    device = gpucore.default_device()
    torch = _harness.torch_cuda()
    gpucore.register_shader_root("shaders")  # gpucore alone: gpustd is not imported here
    kernel = gpucore.Kernel.load("core/vector_add")
    sizes = [1 << 16, 1 << 20] if quick else [1 << 20, 1 << 22, 1 << 24, 1 << 26]
    repeat = 3 if quick else 30
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        a = rng.standard_normal(n, dtype=np.float32)
        b = rng.standard_normal(n, dtype=np.float32)
        a_gpu, b_gpu = gpucore.Buffer.from_numpy(a, device=device), gpucore.Buffer.from_numpy(
            b, device=device)
        out = gpucore.Buffer.empty(n, np.float32, device=device)

        def ours(a_gpu=a_gpu, b_gpu=b_gpu, out=out, n=n) -> None:
            kernel.dispatch(kernel.groups_for(n), a_gpu, b_gpu, out, n=n)

        timing = _harness.ours_ms(ours, device, repeat=repeat)
        if not np.array_equal(out.read(), a + b):
            raise AssertionError(f"vector_add result wrong at n={n}")
        ours_ms = timing["gpu_ms"] if np.isfinite(timing["gpu_ms"]) else timing["wall_ms"]
        c = np.empty_like(a)
        numpy_ms = _harness.numpy_ms(lambda a=a, b=b, c=c: np.add(a, b, out=c), repeat=repeat)
        row = {"n": n, "ours_gpu_ms": timing["gpu_ms"], "ours_wall_ms": timing["wall_ms"],
               "ours_GBps": _gbps(n, ours_ms), "numpy_ms": numpy_ms,
               "numpy_GBps": _gbps(n, numpy_ms), "vs_numpy": numpy_ms / ours_ms}
        if torch is not None:
            ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
            tc = torch.empty_like(ta)
            torch_ms = _harness.torch_cuda_ms(lambda ta=ta, tb=tb, tc=tc: torch.add(ta, tb, out=tc),
                                              repeat=repeat)
            row.update(torch_ms=torch_ms, torch_GBps=_gbps(n, torch_ms),
                       vs_torch=torch_ms / ours_ms)
        rows.append(row)
        del a_gpu, b_gpu, out
    return {
        "benchmark": "vector_add",
        "environment": _harness.environment(device),
        "notes": "ms are medians; ours_gpu_ms from timestamp queries, ours_wall_ms includes "
                 "submit + wait; vs_X = X_ms / ours (>1 means we are faster); GB/s counts "
                 "3 x 4 bytes per element",
        "columns": COLUMNS,
        "rows": rows,
    }
