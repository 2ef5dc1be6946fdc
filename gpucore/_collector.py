"""Pausing Python's cyclic collector where it must not release a dead Device.

gpucore Devices are freed by the cyclic collector (they sit in reference cycles), and
releasing a dead wgpu device while wgpu-native is busy aborts the process: inside a map's
completion callback (cffi calls back into Python, an allocation there starts a collection and
the queue is released re-entrantly), and on a DeviceGroup.map thread while the other devices'
threads are inside wgpu-native (both seen under the suite's threaded multi-device tests).
Transfers and DeviceGroup.map pause the collector (a nesting count across threads); it runs
at the next allocation after the last pause ends. The real fix is a Device freed by its
reference count, or releases deferred to a safe point.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["collector_paused"]

_gc_lock = threading.Lock()
_gc_paused = 0
_gc_was_enabled = False


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    global _gc_paused, _gc_was_enabled
    with _gc_lock:
        if _gc_paused == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_paused += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_paused -= 1
            if _gc_paused == 0 and _gc_was_enabled:
                gc.enable()


