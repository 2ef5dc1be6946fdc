"""Dead Devices: their wgpu devices are released by gpucore.release_dead_devices() (a safe
point), never inside a garbage collection, and what ops keep on a device goes with it.

Before gpucore._teardown the cyclic collector released a dead Device wherever it ran: inside
a map callback, or on one thread while another was inside wgpu-native (both aborted the
suite's process). The stress test below runs in a child process, so an abort fails it
instead of killing pytest; besides the exit status it counts wgpu device releases that ran
inside a collection (gc.callbacks), which were many a second before the fix.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import numpy as np
import pytest
from conftest import ADAPTERS

import gpucore
from gpucore import Buffer, Device, Event
from gpustd.gemm.portable import no_bias

if not ADAPTERS:
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.usefixtures("young_heap")  # conftest: a collection of its own objects
def test_a_dead_device_is_released_at_the_safe_point_not_in_the_collection() -> None:
    gpucore.release_dead_devices()  # earlier tests' dead devices: not counted below
    device = Device(ADAPTERS[0])
    kept = no_bias(device, np.dtype(np.float32))  # kept by the device, naming the device
    assert no_bias(device, np.dtype(np.float32)) is kept
    Buffer.from_numpy(np.arange(5, dtype=np.float32), device=device).read()
    with device.stream("side"):
        Buffer.zeros(7, device=device)
    Event(device).record().wait()
    dead, handle = weakref.ref(device), weakref.ref(device.wgpu)
    del device, kept
    gc.collect()
    assert dead() is None, "something outside the device still holds it"
    assert handle() is not None and handle()._internal is not None, \
        "the collection released the wgpu device (it must wait for the safe point)"
    assert gpucore.release_dead_devices() >= 1
    assert handle() is None or handle()._internal is None
    assert gpucore.release_dead_devices() == 0


@pytest.mark.usefixtures("young_heap")  # conftest: a collection of its own objects
def test_opengl_devices_share_one_lock_and_release_still_runs() -> None:
    """wgpu's GL backend crashes now and then under two threads at once, so every OpenGL
    Device does its work under one lock; other backends keep a lock each. release_dead takes
    each lock once, the shared one included."""
    gl = [a for a in ADAPTERS if a.backend == "gl"]
    others = [a for a in ADAPTERS if a.backend != "gl"]
    if not gl:
        pytest.skip("no OpenGL adapter here")
    first, second = Device(gl[0]), Device(gl[0])
    assert first._lock is second._lock
    if others:
        assert Device(others[0])._lock is not Device(others[0])._lock
    dead = weakref.ref(second)
    del second
    gc.collect()
    assert dead() is None and gpucore.release_dead_devices() >= 1
    Buffer.from_numpy(np.arange(3, dtype=np.float32), device=first).read()


def test_device_keep_makes_once_per_key() -> None:
    device = Device(ADAPTERS[0])
    made: list[int] = []
    first = device.keep("k", lambda: made.append(1) or len(made))
    assert device.keep("k", lambda: made.append(1) or len(made)) == first == 1
    assert device.keep("other", lambda: 7) == 7 and made == [1]


_STRESS = """
import gc, sys, threading, time
import numpy as np
import gpucore
from gpucore import Buffer, Device, Event

collecting = set()  # the threads inside a collection now
in_collection = []
gc.callbacks.append(lambda phase, info: (collecting.add if phase == "start"
                                         else collecting.discard)(threading.get_ident()))
cls = type(Device(gpucore.devices()[0]).wgpu)
original = cls._release

def watched(self):
    if threading.get_ident() in collecting and self._internal is not None:
        in_collection.append((threading.current_thread().name, self.label))
    original(self)

cls._release = watched
gpucore.release_dead_devices()
adapters = gpucore.devices()
live = [Device(info) for info in adapters]
stop = time.monotonic() + float(sys.argv[1])
errors = []

def work(device):
    rng = np.random.default_rng(0)
    try:
        while time.monotonic() < stop:
            a = rng.standard_normal(2000).astype(np.float32)
            junk = [[i] for i in range(300)]  # allocations: collections on this thread too
            assert np.array_equal(Buffer.from_numpy(a, device=device).read(), a)
            Event(device).record().wait()
    except BaseException as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=work, args=(d,)) for d in live for _ in range(2)]
for t in threads:
    t.start()
gc.set_threshold(5, 1, 1)
opened = 0
while time.monotonic() < stop:
    dead = Device(adapters[opened % len(adapters)])
    opened += 1
    Buffer.from_numpy(np.ones(64, np.float32), device=dead).read()
    Event(dead).record()  # left pending: its map completes on the poll thread
    dead.keep("scratch", lambda: Buffer(16, device=dead))
    del dead
for t in threads:
    t.join()
gc.collect()
gpucore.release_dead_devices()
print("opened", opened, "errors", errors, "released in a collection", in_collection)
assert not errors and not in_collection and opened > 3
"""


def test_threads_and_collections_never_release_a_device_in_a_collection() -> None:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(_STRESS), "4"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
