"""Warmup: the kernels a workload used last time, built again in threads while the process does
its other cold work (reading and uploading weights), and what it uses this time remembered for
the next process.

    warm = gpucore.Warmup(device, "txt2img shapes-128 float16")  # the builds start
    pipe = load_pipeline(..., device=device)   # meanwhile
    pipe.txt2img("a red circle")               # kernels built ahead are taken, others built
    warm.save()                                 # what this run used, for the next start

A pipeline's creation is the one part of a kernel's compile no cache keeps (wgpu-native has no
pipeline cache; the drivers' shader caches keep their own part, gpucore._cache): on lavapipe
it is most of a second cold process. The list is kept in the cache directory, keyed like the
autotuner's choices (runtime, adapter, driver, version, kernel sources) and by the workload's
name; it holds each kernel's WGSL, entry point and constants, so a stale or damaged list costs
at most some wasted building, never a wrong result: the kernels are the ones the ops ask for,
found by the same key (source hash, entry, constants).

Builds run ahead in threads where a device takes calls from several threads: wgpu-native's
Vulkan, Metal and D3D12 devices. Dawn is called from one thread only: there the Warmup begins
the listed builds on the thread that made it, the costliest first, and Dawn compiles them on
threads of its own (create_compute_pipeline_async; gpucore._pipelines). Beginning one is
Tint's translation, on that thread (74 of SD 1.5's: 0.3 s of a 4 s second process on an
H200), so they begin one at a time where that thread would otherwise wait: `work_while_waiting()`
(the weights' reads call it while the upload waits for them). Those not begun by the time an op
wants them are built where they are wanted, as without a Warmup. OpenGL's contexts are
not shared between threads; on OpenGL, and with GPUCORE_WARMUP=0, a Warmup does nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import weakref
from collections import deque
from pathlib import Path

from . import _autotune, _build_devices, _cache
from ._device import Device
from ._kernel import Kernel
from ._pipelines import ENV

__all__ = ["ENV", "Warmup", "work_while_waiting"]

FORMAT = 1
MAX_THREADS = 8
# Dawn Warmups with builds to begin on their own thread (not kept alive by being here)
_waiting: weakref.WeakSet[Warmup] = weakref.WeakSet()


def work_while_waiting() -> bool:
    """Begin one kernel build that a Warmup made on this thread put off (module docstring), as
    work for a moment the caller would otherwise wait; False when there is none."""
    me = threading.get_ident()
    for warmup in list(_waiting):
        if warmup.owner != me:
            continue
        if warmup.begin_next():
            return True
        _waiting.discard(warmup)
    return False


def enabled(device: Device) -> bool:
    """Whether builds may run ahead on `device` (module docstring)."""
    if os.environ.get(ENV, "1").strip() == "0" or device.info.backend == "gl":
        return False
    return device.info.runtime == "wgpu" or device.builds_later


class Warmup:
    """Builds the kernels `workload` used last time on `device`, in threads, from now on; notes
    the kernels used until `save()`, which writes them down for the next process."""

    def __init__(self, device: Device, workload: str, *, threads: int | None = None) -> None:
        self.device = device
        self.workload = workload
        self.ahead = 0  # kernels given to the threads
        self._queue: deque[tuple[str, str, str, dict[str, float]]] = deque()
        self._threads: list[threading.Thread] = []
        self.key: dict[str, str] = {}
        self.path: Path | None = None  # the list's file, where builds may run ahead
        self.owner: int | None = None  # Dawn: the thread its builds begin on
        if not enabled(device):
            return
        self.key = {**_autotune.cache_key(device), "workload": workload, "format": str(FORMAT)}
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()
        self.path = _cache.cache_dir() / f"kernels-{digest[:16]}.json"
        device.pipelines.start_log()  # an earlier Warmup never saved (its run failed): replaced
        self._queue.extend(self._listed())
        self.ahead = len(self._queue)
        if device.info.runtime != "wgpu":  # Dawn: begun here, built on Dawn's threads
            if self.ahead:  # built here before: in the driver's cache, no extra devices
                _build_devices.expect_cached(device)
            # the costliest first: none is left to the end of the pools' queues
            self._queue = deque(sorted(self._queue, key=lambda k: -_build_devices.cost(k[0])))
            self.owner = threading.get_ident()
            if self._queue:
                _waiting.add(self)
            return
        # Daemon threads: a process that ends early (an error) does not wait for the list.
        count = min(threads or MAX_THREADS, os.cpu_count() or 1, self.ahead)
        self._threads = [threading.Thread(target=self._work, name=f"gpucore-warmup-{i}",
                                          daemon=True) for i in range(count)]
        for thread in self._threads:
            thread.start()

    def _listed(self) -> list[tuple[str, str, str, dict[str, float]]]:
        assert self.path is not None
        payload = _cache.read_json(self.path, self.key, "kernel list") or {}
        kernels = payload.get("kernels")
        if not isinstance(kernels, list):
            return []
        return [(k["source"], k["name"], k["entry"], dict(k["constants"])) for k in kernels
                if isinstance(k, dict) and {"source", "name", "entry", "constants"} <= set(k)]

    def _work(self) -> None:
        while True:
            try:
                source, name, entry, constants = self._queue.popleft()
            except IndexError:
                return
            try:
                kernel = Kernel(source, name=name, entry=entry, constants=constants)
                kernel.build_ahead(self.device)
            except Exception:  # the op that needs it builds it again and says what failed
                continue

    def begin_next(self) -> bool:
        """Dawn: begin the next listed build on this thread; False when none is left."""
        try:
            source, name, entry, constants = self._queue.popleft()
        except IndexError:
            return False
        try:
            Kernel(source, name=name, entry=entry, constants=constants).build_ahead(
                self.device, begin=True)
        except Exception:  # the op that needs it builds it again and says what failed
            pass
        return True

    def wait(self) -> int:
        """Block until every build ahead has finished; returns how many were listed. On Dawn,
        called on the Warmup's thread, it first begins those still put off."""
        while self.owner == threading.get_ident() and self.begin_next():
            pass
        for thread in self._threads:
            thread.join()
        if self.path is not None and not self._threads:
            self.device.pipelines.settle()  # those begun on Dawn's threads
        return self.ahead

    def stop(self) -> None:
        """Drop the builds not begun and wait for those under way (one a thread at most)."""
        self._queue.clear()
        _waiting.discard(self)
        self.wait()

    def save(self) -> bool:
        """Stop, then write the kernels used since the Warmup began down for the next process
        (in the order first used). True when written."""
        self.stop()
        if self.path is None or self.device.pipelines.log is None:
            return False
        used = self.device.pipelines.stop_log()
        if not used:
            return False
        kernels = [{"source": s, "name": n, "entry": e, "constants": c} for s, n, e, c in used]
        return _cache.write_json(self.path, self.key, {"kernels": kernels})
