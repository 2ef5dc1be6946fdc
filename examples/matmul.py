"""Multiply two float32 matrices on the GPU with gpustd.linalg.matmul and check against numpy.

    python examples/matmul.py [--size 2048] [--repeat 10] [--dtype float32|float16]

Set AVX_EXAMPLE_SMALL=1 for a quick run (the test suite does). GPUCORE_BACKEND /
GPUCORE_ADAPTER pick the adapter (see `python -m gpucore info`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

import gpucore
from gpustd import Tensor, linalg


def main(argv: list[str] | None = None) -> int:
    small = os.environ.get("AVX_EXAMPLE_SMALL") == "1"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=67 if small else 512,
                        help="N for an N x N @ N x N product (default 512, 67 when small)")
    parser.add_argument("--repeat", type=int, default=2 if small else 10,
                        help="timed runs; the median is reported")
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    args = parser.parse_args(argv)
    if args.size < 1 or args.repeat < 1:
        parser.error("--size and --repeat must be positive")

    device = gpucore.default_device()
    dtype = np.dtype(args.dtype)
    if dtype == np.float16 and not device.has_f16:
        parser.error(f"{device.name} has no shader-f16; use --dtype float32")
    n = args.size
    rng = np.random.default_rng()
    a = rng.uniform(-1, 1, (n, n)).astype(dtype)
    b = rng.uniform(-1, 1, (n, n)).astype(dtype)
    a_gpu = Tensor.from_numpy(a, device=device, read_only=True)
    b_gpu = Tensor.from_numpy(b, device=device, read_only=True)
    out = Tensor.empty((n, n), dtype, device=device)

    linalg.matmul(a_gpu, b_gpu, out=out)  # warm-up: compiles the pipeline
    expected = a.astype(np.float64) @ b.astype(np.float64)
    error = float(np.max(np.abs(out.numpy() - expected)) / np.max(np.abs(expected)))
    tolerance = 1e-5 if dtype == np.float32 else 1e-2

    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        linalg.matmul(a_gpu, b_gpu, out=out)
        device.synchronize()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    print(f"device:   {device.name} ({device.backend}, {device.info.type})")
    print(f"product:  {n} x {n} @ {n} x {n} {dtype}")
    print(f"time:     {seconds * 1e3:.3f} ms (median of {args.repeat}, incl. submit + wait)")
    print(f"speed:    {2 * n**3 / seconds / 1e9:.1f} GFLOP/s")
    print(f"relative error vs numpy float64: {error:.2e} (tolerance {tolerance:.0e})")
    if error > tolerance:
        print("FAILED: the GPU result does not match numpy", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
