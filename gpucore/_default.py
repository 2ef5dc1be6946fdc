"""The process-wide default device, and synchronize() on it."""

from __future__ import annotations

import threading

from ._device import Device
from ._phases import phase

__all__ = ["default_device", "synchronize"]

_default: Device | None = None
_default_lock = threading.Lock()


def default_device() -> Device:
    """The process-wide default device (`Device.auto()`, created on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            with phase("device"):
                _default = Device.auto()
        return _default


def synchronize(device: Device | None = None) -> None:
    """Wait for all GPU work on `device` (default device if None)."""
    (device or default_device()).synchronize()

