"""The process-wide default device, and synchronize() on it.

A command line that will need the device can begin opening it ahead (`open_default_device_ahead`,
before its own imports and argument checks): loading the runtime's library, the instance, the
adapters and the device are mostly native calls that let go of the GIL, so they overlap the
Python work in front of the first use. On an H100 host opening Dawn's device took 0.45 s of a
5 s process.
"""

from __future__ import annotations

import threading
import time

from ._device import Device
from ._phases import active_phases, phase

__all__ = ["default_device", "open_default_device_ahead", "synchronize"]

_default: Device | None = None
_default_lock = threading.Lock()
_ahead: threading.Thread | None = None
_ahead_lock = threading.Lock()  # not _default_lock, which the opening thread holds
_ahead_seconds: list[float] = []  # the opening ahead's wall seconds, until a Phases counts them


def default_device() -> Device:
    """The process-wide default device (`Device.auto()`, created on first use; one being opened
    ahead is waited for, phase "device wait")."""
    global _default
    ahead = _ahead
    if ahead is not None and ahead.is_alive():
        with phase("device wait"):
            ahead.join()
    with _default_lock:
        if _default is None:  # none ahead, or it failed: this raises what it raised
            with phase("device"):
                _default = Device.auto()
        elif _ahead_seconds and (phases := active_phases()) is not None:
            phases.add("device", _ahead_seconds.pop())  # overlapped other phases
        return _default


def open_default_device_ahead() -> bool:
    """Begin opening the default device (`Device.auto()`) on a thread; True when one began
    (False: open already, or being opened). The first `default_device()` waits for it and
    counts its seconds as phase "device". An error there is not raised on the thread: that
    `default_device()` opens again and raises it. The thread is not a daemon: a process that
    ends before using the device waits for the opening to end first."""
    global _ahead
    with _ahead_lock:
        if _default is not None or _ahead is not None:
            return False
        _ahead = threading.Thread(target=_open, name="gpucore-open-device")
    _ahead.start()
    return True


def _open() -> None:
    global _default
    started = time.perf_counter()
    with _default_lock:
        if _default is not None:
            return
        try:
            _default = Device.auto()
        except Exception:  # default_device() tries again and raises it where it is wanted
            return
    _ahead_seconds.append(time.perf_counter() - started)


def synchronize(device: Device | None = None) -> None:
    """Wait for all GPU work on `device` (default device if None)."""
    (device or default_device()).synchronize()
