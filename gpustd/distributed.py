"""Tensors over several devices: `scatter`, `gather`, `gather_numpy` and `split_apply`.

Devices share no memory, and wgpu has no peer-to-peer copy, so every move between devices goes
through host memory: a device-to-host read, then a host-to-device write. Per part, and in
parallel threads (one per device):

    scatter from numpy     : H2D(part)
    scatter from a Tensor  : D2H(whole, once) + H2D(part) for parts on other devices
    gather to numpy        : D2H(part)
    gather to a device     : D2H(part) + H2D(part) for parts not already there

Cost model: with B bytes in and out and a single-device compute time C, splitting over n
devices takes about  H2D(B/n) + C/n + D2H(B/n)  when the data starts and ends on the host
(one device pays H2D(B) + C + D2H(B) there too), but  C/n + (D2H + H2D)(moved bytes)  when it
starts and ends on one device. Measured on an H100 through wgpu 0.32 (bench/multigpu.py,
bench/results/multigpu-h100.json): H2D 4.6 GiB/s, D2H 0.84 GiB/s, i.e. about 1.4 s per GiB
moved between two devices. A batched 8 x 4096^3 float32 GEMM computes in 38 ms there but
takes 1.2 s from and back to the host, so:
  - splitting data that lives on one device never pays through the host: a square float32
    GEMM of side n saves n^3 / 27e12 s on the second GPU, moves about 8 n^2 bytes, and
    breaks even only at n ~ 3e5; memory-bound work (FFT, elementwise) is further off still;
  - splitting pays when each device makes its own inputs (seeds, parameter sweeps, the
    server's images: nothing crosses the host) and its work is GPU-bound rather than
    Python-bound, or when the data starts on the host anyway and each device's copies run
    at the same time as the others'.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpucore import Device, DeviceGroup, split_sizes

from ._tensor import Tensor
from .shape import concatenate, take_slice

__all__ = ["gather", "gather_numpy", "scatter", "split_apply"]


def _threads(calls: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run the calls in parallel threads; results in order, the first error raised."""
    results: list[Any] = [None] * len(calls)
    errors: dict[int, BaseException] = {}

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # re-raised below, in order
            errors[i] = exc
    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[min(errors)]
    return results


def _axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for {ndim} dimensions")
    return axis % ndim


def scatter(x: Any, group: DeviceGroup | Sequence[Device], axis: int = 0,
            sizes: Sequence[int] | None = None) -> list[Tensor]:
    """Cut `x` along `axis` into one part per device of `group` and copy each part there.

    `x`: a numpy array (or anything np.asarray takes) or a Tensor (read to the host once; the
    part for its own device stays on the device). `sizes`: each part's length along `axis`
    (default: as even as possible, as `np.array_split`). Uploads run in parallel threads.
    numpy: `np.array_split(x, len(group), axis)`; torch: `torch.cuda.comm.scatter`.
    """
    devices = list(group)
    source = x if isinstance(x, Tensor) else None
    host = None if source is not None else np.asarray(x)
    shape = source.shape if source is not None else host.shape  # type: ignore[union-attr]
    if not shape:
        raise ValueError("cannot scatter a 0-d array; give it an axis to split along")
    axis = _axis(axis, len(shape))
    length = shape[axis]
    sizes = split_sizes(length, len(devices)) if sizes is None else [int(s) for s in sizes]
    if len(sizes) != len(devices) or sum(sizes) != length or min(sizes) < 0:
        raise ValueError(f"sizes {list(sizes)} must be {len(devices)} non-negative lengths "
                         f"adding up to {length} (axis {axis} of shape {shape})")
    bounds = list(itertools.pairwise(itertools.accumulate(sizes, initial=0)))
    if source is not None and any(d is not source.device for d in devices):
        host = source.numpy()

    def upload(device: Device, start: int, stop: int) -> Callable[[], Tensor]:
        if source is not None and device is source.device:
            return lambda: take_slice(source, start, stop, axis)
        index = (slice(None),) * axis + (slice(start, stop),)
        return lambda: Tensor.from_numpy(host[index], dtype=shape_dtype, device=device)
    shape_dtype = source.dtype if source is not None else None
    return _threads([upload(d, a, b) for d, (a, b) in zip(devices, bounds, strict=True)])


def gather_numpy(parts: Sequence[Tensor], axis: int = 0) -> np.ndarray:
    """The parts, read back in parallel threads and joined along `axis` on the host.
    numpy: `np.concatenate([p.numpy() for p in parts], axis)`."""
    if not parts:
        raise ValueError("gather needs at least one part")
    return np.concatenate(_threads([part.numpy for part in parts]), axis=axis)


def gather(parts: Sequence[Tensor], axis: int = 0, device: Device | None = None) -> Tensor:
    """The parts joined along `axis` into one Tensor on `device` (default: the first part's).

    Parts on other devices travel through the host (read in parallel threads, then written);
    parts already there are copied on the device. numpy: `np.concatenate(parts, axis)`;
    torch: `torch.cuda.comm.gather`.
    """
    if not parts:
        raise ValueError("gather needs at least one part")
    target = device or parts[0].device

    def fetch(part: Tensor) -> Callable[[], Tensor]:
        if part.device is target:
            return lambda: part
        return lambda: Tensor.from_numpy(part.numpy(), dtype=part.dtype, device=target)
    local = _threads([fetch(part) for part in parts])
    return local[0] if len(local) == 1 else concatenate(local, axis=axis)


def split_apply(group: DeviceGroup, fn: Callable[[Tensor], Tensor], x: Any, axis: int = 0,
                *, out_axis: int | None = None, device: Device | None = None,
                to_numpy: bool = False) -> Tensor | np.ndarray:
    """`fn` applied to the parts of `x` on every device of `group` at once, joined again.

    `fn(part) -> Tensor` must treat the slices along `axis` independently (a batch axis):
    then the result equals `fn(x)` on one device. The parts are joined along `out_axis`
    (default `axis`) on `device` (default: the group's first), or on the host with
    `to_numpy=True` (cheaper: no final upload).
    """
    parts = scatter(x, group, axis)
    outs = group.map(lambda _device, part: fn(part), parts)
    join = axis if out_axis is None else out_axis
    if to_numpy:
        return gather_numpy(outs, join)
    return gather(outs, join, device or group[0])
