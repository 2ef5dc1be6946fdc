"""A Buffer freed by the cycle collector while another thread allocates: the pool must never
hand out a wgpu buffer that the same collection then releases (a server's worker thread
loading weights while its main thread collected garbage wrote into a released buffer, and
bound one: wgpu-native aborted the process)."""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

import numpy as np

import gpucore
from gpucore import Buffer

N = 777  # float32 elements: a size class no other test uses, so the worker takes the cycle's


class _Yields:
    """Garbage whose finalizer gives up the GIL, as any Python finalizer may at a switch."""

    def __del__(self) -> None:
        time.sleep(0.0005)


def test_a_buffer_collected_in_a_cycle_is_not_handed_out_to_be_released(
        first_device: gpucore.Device, monkeypatch: Any) -> None:
    dev = first_device
    made: list[_Yields] = []
    allocate = dev.allocate

    def allocate_after_garbage(*args: Any, **kwargs: Any) -> Any:
        # between the Buffer and its wgpu buffer in the collector's order: the Buffer's
        # __del__ pools the wgpu buffer, this one's lets the worker take it, then the wgpu
        # buffer's own finalizer (same collection) would run
        made.append(_Yields())
        return allocate(*args, **kwargs)

    monkeypatch.setattr(dev, "allocate", allocate_after_garbage)
    data = np.arange(N, dtype=np.float32)
    errors: list[BaseException] = []
    cycled: set[int] = set()  # ids of the wgpu buffers the collected Buffers held
    taken: set[int] = set()  # and of those the worker got
    stop = threading.Event()

    def worker() -> None:  # the loading thread: takes pooled buffers and writes into them
        kept: list[Buffer[Any]] = []
        try:
            while not stop.is_set():
                kept = [*kept[-31:], Buffer.empty(N, device=dev)]
                taken.add(id(kept[-1].wgpu))
                for b in kept:
                    b.write(data)
        except BaseException as exc:  # the failure under test, raised on this thread
            errors.append(exc)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        end = time.perf_counter() + 0.5  # fails in its first round without the fix
        while time.perf_counter() < end and not errors:
            buffers = [Buffer.empty(N, device=dev) for _ in range(8)]
            cycled.update(id(b.wgpu) for b in buffers)
            cycle: list[object] = [*buffers, *made]
            del buffers
            made.clear()
            cycle.append(cycle)
            del cycle
            gc.collect(0)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not errors, f"the worker wrote into a released buffer: {errors[0]!r}"
    assert taken & cycled  # the race was run: the pool handed the collected ones out
