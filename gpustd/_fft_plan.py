"""How one complex FFT of any length becomes dispatches: Stockham passes or Bluestein.

Every transform here reads and writes complex64 data laid out as (batch, n, stride): point k
of transform (b, c) sits at (b * n + k) * stride + c. That covers any axis of a C-ordered
array, so no transform needs a transpose.

- n a power of two: one pass of `shaders/fft/stockham.wgsl` when n fits a workgroup's
  memory (TILE points: 4096 for n = 4096, else 2048), otherwise the fewest passes whose
  local FFTs keep at least MIN_COLUMNS columns per workgroup (two passes up to 2^18, three
  up to 2^27). CPU adapters run the same passes through `stockham_cpu.wgsl`, loops in place
  of its straight-line radix-16 code, which llvmpipe compiles in 0.1 s rather than 3-14.
- any other n: Bluestein's chirp-z transform through a power-of-two FFT of M >= 2n - 1 points,
  its filter spectrum computed once per (n, direction) in float64 on the host.
- n == 1: a copy.

Temporaries live in per-device scratch buffers that only grow, so repeated calls allocate
nothing; dispatches execute in recording order, which makes reusing them between calls safe.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from gpucore import Buffer, Device, Kernel

__all__ = ["MIN_COLUMNS", "ROLLED", "complex_axis", "dispatch", "kernel", "layout", "lock",
           "pass_lengths", "resize", "scratch", "table", "tile_for", "transform"]

POINTS_PER_INVOCATION = 16  # E in stockham.wgsl
TILE_MAX = 4096  # 32 KiB of workgroup memory, which every backend we target grants
# Smaller workgroups (16 KiB, 128 invocations) fit more per SM: on an H200 they ran 1.1-1.4x
# faster than 4096-point ones for every n except 4096 itself, which they would split in two.
TILE_PREFERRED = 2048
# Columns per workgroup in multi-pass FFTs: each load and store moves runs of MIN_COLUMNS
# consecutive complex64 values (32 bytes, one DRAM sector) per point.
MIN_COLUMNS = 4
_TABLES_KEPT = 64
# False: CPU adapters take stockham.wgsl as GPUs do (test_fft checks it on lavapipe this way).
ROLLED = True

lock = threading.RLock()  # one transform's dispatches share scratch: record them together


# The parts each kernel's `//! parts:` line names (fft/axis: the one-axis kernels' indexing).
_PARTS = {name: ("fft/axis",) for name in
          ("fft/promote", "fft/resize", "fft/resize_real", "fft/hermitian")}


def kernel(name: str, entry: str = "main", **constants: float) -> Kernel:
    """The cached Kernel for shaders/<name>.wgsl (with its parts) with these override
    constants."""
    return Kernel.cached(name, parts=_PARTS.get(name, ()), entry=entry, constants=constants)


def dispatch(name: str, count: int, *buffers: Any, entry: str = "main", **params: Any) -> None:
    """Run a one-invocation-per-element kernel over `count` elements."""
    k = kernel(name, entry)
    k.dispatch(k.groups_for(count), *buffers, **params)


def tile_for(device: Device, n: int | None = None) -> int:
    """Complex points one workgroup transforms in its memory (a power of two) for length n."""
    tile = TILE_MAX
    points = device.limits["max-compute-workgroup-storage-size"] // 8
    invocations = device.limits["max-compute-invocations-per-workgroup"]
    while tile > points or tile // POINTS_PER_INVOCATION > invocations:
        tile //= 2
    if n is not None and not TILE_PREFERRED < n <= tile:
        tile = min(tile, TILE_PREFERRED)
    return tile


def pass_lengths(n: int, tile: int) -> list[int]:
    """Local FFT lengths of the Stockham passes for a power-of-two n (product is n)."""
    bits = n.bit_length() - 1
    if n <= tile:
        return [n]
    most = (tile // MIN_COLUMNS).bit_length() - 1
    passes = -(-bits // most)
    base, extra = divmod(bits, passes)
    return [1 << (base + (i < extra)) for i in range(passes)]


def _cache(device: Device) -> dict[Any, Buffer[Any]]:
    return device.keep("fft tables", dict)


def table(device: Device, key: Any, build: Any) -> Buffer[Any]:
    """A constant complex64 table on `device`, built once from `build()` (float64 numpy)."""
    cache = _cache(device)
    found = cache.pop(key, None)
    if found is None:
        data = np.asarray(build()).astype(np.complex64)
        found = Buffer.from_numpy(data, device=device, read_only=True)
        if len(cache) >= _TABLES_KEPT:
            cache.pop(next(iter(cache)))
    cache[key] = found  # most recently used last
    return found


def scratch(device: Device, slot: str, length: int, dtype: Any = np.complex64) -> Buffer[Any]:
    """The scratch buffer `slot` of at least `length` elements (grown, never shrunk)."""
    slots: dict[str, Buffer[Any]] = device.keep("fft scratch", dict)
    key = f"{slot}:{np.dtype(dtype)}"
    found = slots.get(key)
    if found is None or found.length < length:
        found = slots[key] = Buffer(max(length, 1), dtype, device=device, label=f"fft {slot}")
    return found


def _roots(device: Device) -> Buffer[Any]:
    """exp(2 pi i h / 64), h < 64, in float64 then float32: stockham.wgsl's twiddle base."""
    return table(device, "roots64", lambda: np.exp(2j * np.pi * np.arange(64) / 64))


def _pow2_divisor(x: int) -> int:
    return x & -x


def _log2(x: int) -> int:
    return x.bit_length() - 1


def _power_of_two(src: Any, dst: Any, batch: int, n: int, stride: int, sign: float,
                  scale: float) -> None:
    device = dst.device
    tile = tile_for(device, n)
    lengths = pass_lengths(n, tile)
    roots = _roots(device)
    spare = scratch(device, "passes", batch * n * stride) if len(lengths) > 1 else None
    name = "fft/stockham_cpu" if ROLLED and device.info.type == "cpu" else "fft/stockham"
    k = Kernel.cached(name, parts=("fft/stockham_common",),
                      constants={"TILE": tile, "WG": tile // POINTS_PER_INVOCATION})
    ns, current = 1, src
    for i, length in enumerate(lengths):
        last = i == len(lengths) - 1
        target = dst if (len(lengths) - 1 - i) % 2 == 0 else spare
        per_group = tile // length
        columns = batch * (n // length) * stride
        k.dispatch(
            -(-columns // per_group), current, roots, target,
            n=n, log_l=_log2(length), log_b=_log2(per_group), log_m=_log2(n // length),
            log_ns=_log2(ns), stride=stride, columns=columns,
            log_read=_log2(min(per_group, _pow2_divisor((n // length) * stride))),
            log_write=_log2(min(per_group, _pow2_divisor(ns * stride))),
            sign=sign, scale=scale if last else 1.0,
        )
        ns *= length
        current = target


def _bluestein_tables(device: Device, n: int, sign: float) -> tuple[Buffer[Any], Buffer[Any], int]:
    """Chirp exp(sign i pi k^2 / n) and the spectrum of its conjugate, wrapped to M points
    and divided by M (the inverse FFT's normalization), both built in float64."""
    m = 1 << (2 * n - 2).bit_length()
    k = np.arange(n, dtype=np.int64)
    # k^2 mod 2n keeps the angle's argument small and exact for any n we can hold.
    chirp = np.exp(sign * 1j * np.pi * ((k * k) % (2 * n)) / n)

    def filter_spectrum() -> np.ndarray:
        b = np.zeros(m, dtype=np.complex128)
        b[:n] = np.conj(chirp)
        b[m - n + 1 :] = np.conj(chirp[1:][::-1])
        return np.fft.fft(b) / m

    return (table(device, ("chirp", n, sign), lambda: chirp),
            table(device, ("chirp-filter", n, sign), filter_spectrum), m)


def resize(src: Any, dst: Any, batch: int, n_in: int, n_out: int, stride: int,
            scale: float = 1.0, w: Any = None) -> None:
    total = batch * n_out * stride
    k = kernel("fft/resize", CHIRP=float(w is not None))
    k.dispatch(k.groups_for(total), src, w if w is not None else src, dst,
               n_in=n_in, n_out=n_out, stride=stride, total=total, scale=scale)


def transform(src: Any, dst: Any, *, batch: int, n: int, stride: int, sign: float,
              scale: float) -> None:
    """Record dst = scale * DFT_n(src) along the middle axis of (batch, n, stride).

    `sign` is the exponent's sign: -1 forward, +1 inverse (unnormalized; `scale` normalizes).
    `src` and `dst` are complex64-laid-out buffers (or Tensors) and must not alias; `src` is
    only read.
    """
    if batch * n * stride == 0:
        return
    with lock:
        if n == 1:
            resize(src, dst, batch, 1, 1, stride, scale)
        elif n & (n - 1) == 0:
            _power_of_two(src, dst, batch, n, stride, sign, scale)
        else:
            device = dst.device
            chirp, spectrum, m = _bluestein_tables(device, n, sign)
            a = scratch(device, "bluestein-a", batch * m * stride)
            b = scratch(device, "bluestein-b", batch * m * stride)
            resize(src, a, batch, n, m, stride, w=chirp)
            _power_of_two(a, b, batch, m, stride, -1.0, 1.0)
            resize(b, a, batch, m, m, stride, w=spectrum)
            _power_of_two(a, b, batch, m, stride, 1.0, 1.0)
            resize(b, dst, batch, m, n, stride, scale, w=chirp)


def layout(shape: tuple[int, ...], axis: int) -> tuple[int, int, int]:
    """(batch, points, stride) of `axis` in a C-ordered array of `shape`."""
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :])


def complex_axis(src: Buffer[Any], dtype: np.dtype, shape: tuple[int, ...], dst: Any, n: int,
                 axis: int, sign: float, scale: float) -> None:
    """dst = scale * DFT along `axis` of src (cropped or zero-padded to n, made complex)."""
    batch, m, stride = layout(shape, axis)
    device = dst.device
    total = batch * n * stride
    if dtype == np.float32:
        staged = scratch(device, "promote", total)
        dispatch("fft/promote", total, src, staged, n_in=m, n_out=n, stride=stride, total=total)
        src = staged
    elif m != n:
        staged = scratch(device, "promote", total)
        resize(src, staged, batch, m, n, stride)
        src = staged
    transform(src, dst, batch=batch, n=n, stride=stride, sign=sign, scale=scale)
