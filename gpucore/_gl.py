"""OpenGL devices: one lock for all of them, and every release of their wgpu objects made
under it.

wgpu's GL backend on Mesa's EGL crashes now and then when two threads call into it at once
(gfx-rs/wgpu#4285, #3250), so every OpenGL Device's work runs under LOCK (other Devices have
a lock each). That left wgpu-py's finalizers: a GPUBuffer, bind group or encoder whose last
reference goes - in a garbage collection on whatever thread allocates, or by reference count
on a thread outside gpucore - calls wgpu-native's release right there. A CI run lost a worker
to one: a collection on the thread driving a lavapipe device released a GL device's buffer
while another thread drove the GL device.

So for the objects of a registered (OpenGL) device, wgpu-py's release runs at once only on a
thread that holds LOCK and is in no collection. Anywhere else the object is put on a list
(which keeps it: its finalizer has run and will not run again) and released when LOCK is next
taken by its outermost holder outside a collection: the next gpucore call on an OpenGL
Device, or release_dead. gpucore._teardown does the same for whole devices.
"""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["LOCK", "pending", "register"]

_devices: weakref.WeakSet[Any] = weakref.WeakSet()  # wgpu devices of OpenGL Devices
_pending: list[Any] = []  # their objects whose release waits for LOCK
_collecting = False  # a garbage collection is running (gc.callbacks)
_original: Callable[[Any], None] | None = None  # wgpu-py's GPUObjectBase._release


class _Lock:
    """A reentrant lock that knows its owner and, taken by its outermost holder outside a
    collection, first releases the wgpu objects that waited for it."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._owner: int | None = None
        self._depth = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if not self._lock.acquire(blocking, timeout):
            return False
        self._owner = threading.get_ident()
        self._depth += 1
        if self._depth == 1:
            _drain()
        return True

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._owner = None
        self._lock.release()

    def held_here(self) -> bool:
        return self._owner == threading.get_ident()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


LOCK = _Lock()


def register(wgpu_device: Any) -> _Lock:
    """Route the releases of `wgpu_device`'s objects (an OpenGL device's) through LOCK, the
    lock its Device then works under."""
    _install()
    _devices.add(wgpu_device)
    return LOCK


def pending() -> int:
    """Objects of OpenGL devices whose release waits for LOCK."""
    return len(_pending)


def _drain() -> None:
    if _collecting or _original is None:
        return
    while _pending:  # a release can free more (and a collection add more): pop until empty
        _original(_pending.pop())


def _release(obj: Any) -> None:
    """wgpu-py's release of `obj`, now or, for an OpenGL device's object off LOCK or inside
    a collection, once LOCK is taken."""
    assert _original is not None
    if getattr(obj, "_device", None) in _devices and (_collecting or not LOCK.held_here()):
        _pending.append(obj)
        return
    _original(obj)


def _track(phase: str, info: dict[str, int]) -> None:
    global _collecting
    _collecting = phase == "start"


def _install() -> None:
    """Put _release in wgpu-native's GPUObjectBase (once)."""
    global _original
    if _original is not None:
        return
    from wgpu.backends.wgpu_native import _api

    _original = _api.GPUObjectBase._release
    _api.GPUObjectBase._release = _release  # type: ignore[method-assign]
    gc.callbacks.append(_track)
