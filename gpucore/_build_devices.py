"""Devices that only compile: more of Dawn's build threads for a cold process's kernels.

Dawn builds the pipelines a device begins with create_compute_pipeline_async on a pool of two
threads of that device's (dawn::platform's AsyncWorkerThreadPool, two threads unless its
embedder asks for more; wgpudawn cannot). A cold first SD 1.5 float16 picture begins its 74
kernels within half a second and then waits while they build two at a time: the process uses
2.0-2.1 cores throughout, 38 s of driver compiling become 19-21 s of waiting on a 16-core host
(bench/NOTES.md, "Two build threads"). Another device on the same adapter has a pool of its
own, and NVIDIA's driver keeps what it compiled in its shader cache, where the same pipeline
built on the device that uses it is found.

So on a Dawn device a pipeline begun in the background goes to the device's own pool or to one
of the extra devices of this module (opened on first need on the device's adapter, with its
features and raised limits; Dawn's toggles are the instance's: the same SPIR-V): to the pool
whose build thread is estimated to free first, each pool's two threads taking their builds in
turn (`_Pools.choose`). A build's cost is estimated from its source (`cost`: the matrix-unit
kernels take ~0.1 ms a character to compile, 23 kB GEMMs 2.3-2.6 s; the others a tenth of
that), and a pool is assumed to run its builds one after another per thread from the moment
they were given, so a long GEMM no longer holds up the builds given to its pool after it while
other pools idle (round-robin turns did). A new extra device is opened only while every open
pool is busy past the opening's own cost (0.07-0.09 s). One
given to an extra device is built there first, and waiting for it builds it on the using
device too. No dispatch runs on an extra device: the pipeline a dispatch uses is its own
device's, so what a picture computes does not change; a build that fails there is built on
the using device, which says what failed. GPUCORE_BUILD_DEVICES=N: how many extra devices
the process opens in all, shared by its devices as they come (default: half the cores less
one, at most 7; 0: none). A device whose kernels were listed by a gpucore.Warmup opens none
(`expect_cached`): its driver cache has them already. An extra device is destroyed as soon as
every build it was given has been waited for, so it holds no GPU memory between a picture's
bursts of new kernels (a later burst opens it again: 0.07-0.09 s).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import wgpu

from ._device import _RAISED_LIMITS, Device
from ._runtime import adapt_source, create_pipeline_later

__all__ = ["ENV", "begin", "cost", "count", "expect_cached", "layout_entries"]

ENV = "GPUCORE_BUILD_DEVICES"
MAX_DEVICES = 7
THREADS = 2  # Dawn's AsyncWorkerThreadPool of a device (module docstring)
OPEN_S = 0.08  # opening an extra device, on the calling thread
# seconds a source character costs to compile (bench/NOTES.md, "Two build threads"): matrix-unit
# kernels (23 kB GEMMs 2.3-2.6 s, 10-13 kB convs 0.8-1.4 s), the others (an 18 kB attention
# 0.16 s, 3-10 kB norms and element-wise kernels 0.01-0.05 s)
MATRIX_S_PER_CHAR = 1e-4
OTHER_S_PER_CHAR = 1e-5
_clock = time.perf_counter

_pools: weakref.WeakKeyDictionary[Device, _Pools] = weakref.WeakKeyDictionary()


def count() -> int:
    """How many extra devices a Dawn device may open (module docstring)."""
    text = os.environ.get(ENV, "").strip()
    if text:
        try:
            return max(int(text), 0)
        except ValueError:
            return 0
    return max(min(MAX_DEVICES, (os.cpu_count() or 1) // 2 - 1), 0)


def cost(source: str) -> float:
    """The estimated seconds a kernel of WGSL `source` takes to build (module docstring)."""
    rate = MATRIX_S_PER_CHAR if "subgroup_matrix" in source else OTHER_S_PER_CHAR
    return len(source) * rate


def layout_entries(storage: Any, params: bool) -> list[dict[str, Any]]:
    """The bind group layout's entries of a kernel: its storage buffers (`storage`, each with
    `.writable`) in order, then the params uniform (dynamic offset) where it has one."""
    entries: list[dict[str, Any]] = []
    for i, b in enumerate(storage):
        kind = (wgpu.BufferBindingType.storage if b.writable
                else wgpu.BufferBindingType.read_only_storage)
        entries.append({"binding": i, "visibility": wgpu.ShaderStage.COMPUTE,
                        "buffer": {"type": kind}})
    if params:
        # A dynamic offset selects this dispatch's slot of the device's params arena, so
        # the bind group itself does not change from dispatch to dispatch and is reused.
        entries.append({"binding": len(entries), "visibility": wgpu.ShaderStage.COMPUTE,
                        "buffer": {"type": wgpu.BufferBindingType.uniform,
                                   "has_dynamic_offset": True}})
    return entries


def expect_cached(device: Device) -> None:
    """`device`'s kernels are expected in the driver's cache: it opens no extra device."""
    pools = _pools.get(device)
    if pools is None:
        _pools[device] = _Pools(device, 0)


class _Pools:
    """`device`'s own build pool and up to `wanted` extra devices, each build given to the
    pool whose thread frees first (module docstring)."""

    def __init__(self, device: Device, wanted: int) -> None:
        self.wanted = wanted
        self.helpers: list[Any] = []
        self._pending: dict[int, int] = {}  # id(helper) -> builds given, not yet waited for
        # None (the device's own pool) or id(helper) -> when each thread is estimated free
        self._free: dict[int | None, list[float]] = {None: [0.0] * THREADS}
        self._lock = threading.Lock()
        self._device = weakref.ref(device)

    def given(self, helper: Any) -> None:
        with self._lock:
            self._pending[id(helper)] = self._pending.get(id(helper), 0) + 1

    def waited(self, helper: Any) -> None:
        """One of `helper`'s builds was waited for; the last one destroys it (module
        docstring): nothing of it is used after its builds."""
        with self._lock:
            left = self._pending.get(id(helper), 0) - 1
            if left > 0:
                self._pending[id(helper)] = left
                return
            self._pending.pop(id(helper), None)
            self._free.pop(id(helper), None)
            if helper in self.helpers:
                self.helpers.remove(helper)
        destroy = getattr(helper, "destroy", None)
        if destroy is not None:
            try:
                destroy()
            except Exception:  # an optimization only: the process goes on without it
                pass

    def choose(self, seconds: float) -> Any | None:
        """The extra device to give a build of `seconds` to (opened now where every open
        pool is busy past OPEN_S), or None for the using device's own pool; the build is
        counted on the chosen pool's thread that frees first."""
        now = _clock()
        pools: list[Any | None] = [None, *self.helpers]
        starts = [max(now, min(self._free[None if p is None else id(p)])) for p in pools]
        best = min(range(len(pools)), key=starts.__getitem__)  # ties: the own pool first
        chosen, start = pools[best], starts[best]
        if start > now + OPEN_S and len(self.helpers) < self.wanted:
            device = self._device()
            opened = sum(len(pools.helpers) for pools in list(_pools.values()))
            if device is not None and opened < count() and self._open(device):
                chosen, start = self.helpers[-1], now + OPEN_S
                self._free[id(chosen)] = [start] * THREADS
            else:
                self.wanted = len(self.helpers)  # none more: the driver or memory said no
        threads = self._free[None if chosen is None else id(chosen)]
        thread = min(range(THREADS), key=threads.__getitem__)
        threads[thread] = start + seconds
        return chosen

    def _open(self, device: Device) -> bool:
        info = device.info
        required: dict[str, int | None] = {
            k: info.limits[k] for k in _RAISED_LIMITS if k in info.limits}
        try:
            helper = info.adapter.request_device_sync(
                label=f"gpucore builds {len(self.helpers) + 1}:{info.label}",
                required_features=sorted(device.features), required_limits=required)
        except Exception:  # an optimization only: the device's own pool builds the rest
            return False
        self.helpers.append(helper)
        return True


def begin(device: Device, descriptor: dict[str, Any], source: str,
          entries: list[dict[str, Any]]) -> Callable[[], Any]:
    """Begin create_compute_pipeline(**descriptor) on `device` off this thread, as
    _runtime.create_pipeline_later does, on an extra device's pool first where this is Dawn
    (module docstring; `source` and `entries` make the same pipeline there); returns what
    waits for `device`'s pipeline (raising its build's error)."""
    runtime = device.info.runtime
    pools = _pools.get(device) if runtime == "dawn" else None
    if pools is None and runtime == "dawn":
        pools = _pools[device] = _Pools(device, count())
    helper = pools.choose(cost(source)) if pools is not None else None
    if helper is None:
        return create_pipeline_later(runtime, device.wgpu, descriptor)
    compute = descriptor["compute"]
    try:
        layout = helper.create_bind_group_layout(entries=entries)
        module = helper.create_shader_module(label=descriptor["label"],
                                             code=adapt_source(runtime, source))
        promise = helper.create_compute_pipeline_async(
            label=descriptor["label"],
            layout=helper.create_pipeline_layout(bind_group_layouts=[layout]),
            compute={"module": module, "entry_point": compute["entry_point"],
                     "constants": compute["constants"]})
    except Exception:
        return create_pipeline_later(runtime, device.wgpu, descriptor)

    assert pools is not None
    pools.given(helper)

    def wait() -> Any:
        try:
            promise.sync_wait()
        except Exception:  # built again below, where its error is the device's own
            pass
        finally:
            pools.waited(helper)
        return device.wgpu.create_compute_pipeline(**descriptor)

    return wait
