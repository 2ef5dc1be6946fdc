"""Releasing dead Devices' wgpu devices at a safe point, never inside a garbage collection.

Why: a gpucore Device sits in reference cycles (its streams, the buffers ops keep on it with
`Device.keep`), and so does wgpu-py's device (with its queue): the cyclic collector frees
them, on whatever thread happens to allocate at that moment. Twice that aborted the suite's
process: a collection inside a map callback released a dead device's queue re-entrantly in
wgpu-native, and one on a DeviceGroup thread released a dead device while the other device's
thread was inside wgpu-native (the server's per-device worker threads are the same).

How: the wgpu device of every open Device is held here, so it is never garbage itself. When
its Device goes (collected anywhere, or freed by its reference count), a finalizer only moves
the handle to the dead list: two operations the GIL makes atomic, no lock, no wgpu call.
`release_dead()` then releases the dead handles (wgpu-py's own release: stop the device's poll
thread, release the queue, release the device) on a caller's thread that is in no collection
and no callback, with every live Device's lock held, so no other thread records, submits or
transfers on any device meanwhile. It runs when a Device opens and after a DeviceGroup.map
(waiting at most 0.1 s for a busy device's lock: else the next call releases them), and on
`gpucore.release_dead_devices()`. What wgpu-py frees later (the Python objects, and leaf
objects such as buffers whose release only drops a count in wgpu-native) needs no care on
Vulkan, Metal and D3D12; an OpenGL device's objects are released under its lock
(gpucore._gl), and that lock, taken here, releases those still waiting first.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from typing import Any

__all__ = ["hold", "release_dead"]

_held: dict[int, Any] = {}  # key -> the wgpu device of a live Device
_dead: list[Any] = []  # wgpu devices whose Device is gone, awaiting release_dead()
_locks: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()  # live Device -> lock
_keys = itertools.count()
_releasing = threading.Lock()


def hold(device: object, wgpu_device: Any, lock: Any) -> None:
    """Keep `wgpu_device` (`device`'s) until `device` is gone and `release_dead()` runs;
    `lock`: the device's, held while its wgpu device could be in use."""
    key = next(_keys)
    _held[key] = wgpu_device
    _locks[device] = lock
    weakref.finalize(device, _bury, key)


def _bury(key: int) -> None:
    # Runs wherever the Device went, a collection or a callback included: move, nothing more.
    handle = _held.pop(key, None)
    if handle is not None:
        _dead.append(handle)


def dead_count() -> int:
    """wgpu devices whose Device is gone and that are not released yet."""
    return len(_dead)


def release_dead(timeout: float = 5.0) -> int:
    """Release the wgpu devices of Devices that are gone; returns how many. Waits up to
    `timeout` seconds for each live Device's lock (work in progress); when one stays busy, or
    another thread is releasing, releases nothing now (the next call will). Call it from a
    thread that holds no Device's lock."""
    if not _dead or not _releasing.acquire(blocking=False):
        return 0
    locked: list[Any] = []  # RLocks, and gpucore._gl.LOCK
    try:  # every lock once (OpenGL Devices share one), in one order for every caller
        for lock in sorted({id(lock): lock for lock in list(_locks.values())}.values(), key=id):
            if not lock.acquire(timeout=timeout):
                return 0
            locked.append(lock)
        released = 0
        while _dead:
            handle = _dead.pop()
            release = getattr(handle, "_release", None)  # wgpu-py's finalizer, run now
            if release is not None:
                release()
            released += 1
        return released
    finally:
        for lock in reversed(locked):
            lock.release()
        _releasing.release()
