"""OpenGL Devices' wgpu objects are released under their one lock (gpucore._gl): wgpu-py's
finalizer of such an object, run off the lock or inside a garbage collection, leaves it on a
list, and the next outermost taking of the lock outside a collection releases it. Objects of
other devices are released where their finalizer runs, as before."""

from __future__ import annotations

import gc
import threading
import weakref
from typing import Any

import numpy as np
import pytest
import wgpu
from conftest import session_devices

import gpucore
from gpucore import Buffer, _gl


def _device(backend: str) -> gpucore.Device:
    found = [d for d in session_devices() if d.backend == backend]
    if not found:
        pytest.skip(f"no {backend} adapter here")
    return found[0]


def _wgpu_buffer(device: gpucore.Device) -> Any:
    return device.wgpu.create_buffer(size=256, usage=wgpu.BufferUsage.STORAGE)


def _settled(device: gpucore.Device) -> None:
    with device._lock:  # releases what earlier tests left waiting
        pass
    assert _gl.pending() == 0


def test_a_release_off_the_lock_waits_for_it() -> None:
    device = _device("gl")
    _settled(device)
    buffer = _wgpu_buffer(device)
    ref = weakref.ref(buffer)
    del buffer  # this thread does not hold the lock: the release waits
    assert _gl.pending() == 1
    assert ref() is not None and ref()._internal is not None  # kept, not released yet
    with device._lock:  # the next gpucore call on the device
        assert _gl.pending() == 0
    assert ref() is None


def test_a_release_on_the_lock_runs_at_once() -> None:
    device = _device("gl")
    _settled(device)
    with device._lock:
        buffer = _wgpu_buffer(device)
        ref = weakref.ref(buffer)
        del buffer
        assert ref() is None and _gl.pending() == 0


@pytest.mark.usefixtures("young_heap")  # conftest: a collection of its own objects
def test_a_release_inside_a_collection_waits_even_on_the_lock() -> None:
    device = _device("gl")
    gc.collect()  # earlier tests' garbage, released below rather than in the collection
    _settled(device)
    with device._lock:
        cycle: dict[str, Any] = {"buffer": _wgpu_buffer(device)}
        cycle["self"] = cycle
        handle = cycle["buffer"]._internal
        del cycle
        gc.collect()  # the finalizer runs in the collection: the release waits
        assert handle in [o._internal for o in _gl._pending]
    with device._lock:  # taken again outside a collection: released
        assert _gl.pending() == 0


def test_a_release_on_another_thread_waits_for_the_holder() -> None:
    device = _device("gl")
    _settled(device)
    box = [_wgpu_buffer(device)]
    ref = weakref.ref(box[0])
    with device._lock:  # this thread drives the device; another drops a buffer of it
        worker = threading.Thread(target=box.clear)
        worker.start()
        worker.join()
        assert _gl.pending() == 1 and ref() is not None
    with device._lock:
        assert _gl.pending() == 0
    assert ref() is None


def test_other_devices_release_where_the_finalizer_runs() -> None:
    device = _device("vulkan")
    before = _gl.pending()
    buffer = _wgpu_buffer(device)
    ref = weakref.ref(buffer)
    del buffer
    assert ref() is None and _gl.pending() == before


def test_gpucore_work_on_an_opengl_device_leaves_nothing_waiting() -> None:
    """Buffers a GL Device frees in its own calls (empty_pool, under the lock) go at once."""
    device = _device("gl")
    _settled(device)
    for _ in range(3):
        x = Buffer.from_numpy(np.arange(1000, dtype=np.float32), device=device)
        np.testing.assert_array_equal(x.read(), np.arange(1000, dtype=np.float32))
        del x
        device.empty_pool()
        assert _gl.pending() == 0
