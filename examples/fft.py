"""Find the tones in a noisy signal with an FFT on the GPU, and check against numpy.

    python examples/fft.py [--n 4194304] [--repeat 10]

A sum of sinusoids at known frequencies plus white noise is transformed with
`gpustd.fft.rfft`; the strongest bins must be the tones, and the spectrum must match
numpy.fft.rfft. Exits non-zero on any mismatch. Set AVX_EXAMPLE_SMALL=1 (or pass a small
--n) for a quick run, as the test suite does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

import gpucore
import gpustd
from gpustd import fft as gfft

TONES = ((0.0731, 1.0), (0.1893, 0.6), (0.3317, 0.35))  # (cycles per sample, amplitude)


def main(argv: list[str] | None = None) -> int:
    small = os.environ.get("AVX_EXAMPLE_SMALL") == "1"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096 if small else 1 << 22,
                        help="samples (default 2^22; 4096 with AVX_EXAMPLE_SMALL=1)")
    parser.add_argument("--repeat", type=int, default=3 if small else 10,
                        help="timed runs; the median is reported")
    args = parser.parse_args(argv)
    if args.n < 64 or args.repeat < 1:
        parser.error("--n must be at least 64 and --repeat positive")
    try:
        return run(gpucore.default_device(), args.n, args.repeat)
    except gpucore.GpuError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(device: gpucore.Device, n: int, repeat: int) -> int:
    rng = np.random.default_rng()
    t = np.arange(n)
    # Tones centred on FFT bins, so each shows as one clear peak (no leakage into neighbours).
    wanted = [round(f * n) for f, _ in TONES]
    signal = sum(a * np.sin(2 * np.pi * k / n * t + rng.uniform(0, 2 * np.pi))
                 for k, (_, a) in zip(wanted, TONES))
    signal = (signal + rng.normal(0.0, 0.5, n)).astype(np.float32)
    x = gpustd.Tensor.from_numpy(signal, device=device)
    spectrum = gfft.rfft(x)  # warm-up: compiles the pipelines, builds the twiddle tables

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        gfft.rfft(x, out=spectrum)
        device.synchronize()
        times.append(time.perf_counter() - start)
    ours = spectrum.numpy()

    expected = np.fft.rfft(signal.astype(np.float64))
    err = float(np.abs(ours - expected).max() / np.abs(expected).max())
    peaks = sorted(int(k) for k in np.argsort(np.abs(ours))[-len(TONES):])
    print(f"device:   {device.name} ({device.backend}, {device.info.type})")
    print(f"samples:  {n:,} float32 -> {n // 2 + 1:,} complex64 bins")
    print(f"time:     {statistics.median(times) * 1e3:.3f} ms per rfft (median of {repeat}, "
          "incl. submit + wait)")
    print("peaks:    " + ", ".join(f"bin {k} = {k / n:.4f} cycles/sample" for k in peaks))
    print(f"error:    {err:.2e} relative to numpy's float64 rfft")
    if peaks != sorted(wanted):
        print(f"FAILED: strongest bins {peaks}, expected the tones at {wanted}", file=sys.stderr)
        return 1
    if err > 1e-4:
        print(f"FAILED: spectrum differs from numpy by {err:.2e}", file=sys.stderr)
        return 1
    print("result:   tones found; spectrum verified against numpy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
