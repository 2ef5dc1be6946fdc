"""Add two large float32 vectors on the GPU and check the result against numpy.

    python examples/vector_add.py [--n 50000000] [--repeat 20]

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

# gpucore ships no shaders: the kernel below is the project's shaders/core/vector_add.wgsl
gpucore.register_shader_root("shaders")


def main(argv: list[str] | None = None) -> int:
    small = os.environ.get("AVX_EXAMPLE_SMALL") == "1"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_003 if small else None,
                        help="number of elements (default: 50M or as many as one storage binding "
                             "holds; 100k with AVX_EXAMPLE_SMALL=1)")
    parser.add_argument("--repeat", type=int, default=3 if small else 20,
                        help="timed runs; the median is reported")
    args = parser.parse_args(argv)
    try:
        device = gpucore.default_device()
        n = args.n
        if n is None:  # as much as one storage binding holds, up to 50M
            n = min(50_000_000, device.limits["max-storage-buffer-binding-size"] // 4)
        if n < 1 or args.repeat < 1:
            parser.error("--n and --repeat must be positive")
        return run(device, n, args.repeat)
    except gpucore.GpuError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(device: gpucore.Device, n: int, repeat: int) -> int:
    rng = np.random.default_rng()
    a = rng.standard_normal(n, dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    a_gpu = gpucore.Buffer.from_numpy(a, device=device, read_only=True)
    b_gpu = gpucore.Buffer.from_numpy(b, device=device, read_only=True)
    out = gpucore.Buffer.empty(n, np.float32, device=device)
    kernel = gpucore.Kernel.load("core/vector_add")

    def run() -> None:
        kernel.dispatch(kernel.groups_for(n), a_gpu, b_gpu, out, n=n)

    run()  # warm-up: compiles the pipeline
    result = out.read()
    expected = a + b
    if not np.array_equal(result, expected):
        bad = int(np.count_nonzero(result != expected))
        print(f"FAILED: {bad} of {n} elements differ from numpy", file=sys.stderr)
        return 1

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        device.synchronize()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    gigabytes = 3 * n * 4 / 1e9  # two reads and one write per element
    print(f"device:   {device.name} ({device.backend}, {device.info.type})")
    print(f"elements: {n:,} float32")
    print(f"time:     {seconds * 1e3:.3f} ms (median of {repeat}, incl. submit + wait)")
    print(f"bandwidth: {gigabytes / seconds:.1f} GB/s")
    print("result:   verified against numpy (exactly equal)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
