"""An interrogator's networks, one per device: a thread server's workers (one GPU each) each
read it once onto their own GPU and run it there, where one network would make every worker
interrogate on the first GPU. No torch equivalent: a torch model is `.to(device)` moved."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["PerDevice"]

T = TypeVar("T")


class PerDevice(Generic[T]):
    """What `read(device)` gives, kept per device; safe to share between threads."""

    def __init__(self) -> None:
        # id(device) -> (the device, its network): the device is held so that its id is not
        # taken by another device opened after it is freed
        self._held: dict[int, tuple[Any, T]] = {}
        # held while a network is read or dropped: two threads read it once, and a clear()
        # between another thread's check and its return cannot hand that thread nothing
        self._lock = threading.Lock()

    def get(self, device: Any, read: Callable[[Any], T]) -> T:
        """`device`'s network, `read(device)` on its first use there."""
        with self._lock:
            held = self._held.get(id(device))
            if held is None:
                held = self._held[id(device)] = (device, read(device))
            return held[1]

    def clear(self) -> None:
        """Drop every device's network (its GPU memory goes once nothing else holds it)."""
        with self._lock:
            self._held.clear()

    def devices(self) -> list[Any]:
        """The devices that hold a network, in the order they read it."""
        with self._lock:
            return [device for device, _ in self._held.values()]
