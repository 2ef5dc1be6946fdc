"""What ops keep per device (Device.keep): scratch buffers and constant tables made on first use.

A kept value lives as long as its device, so while it is made (`making`, this thread's) the
device's allocations take no buffer a capture lent to the pool (gpucore._capture's `lend`):
a VAE decode, run while the transformer step's capture lends its scratch, makes the nn
"no prologue" table on first use; had that table taken a lent buffer and kept it, the capture
could not take its scratch back and the next picture recorded its steps again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

T = TypeVar("T")


class Kept:
    """The values kept under their keys; `lock` is the device's."""

    def __init__(self, lock: AbstractContextManager[Any]) -> None:
        self._lock = lock
        self._values: dict[object, Any] = {}
        self._tls = threading.local()  # this thread's `make()` calls under way

    @property
    def making(self) -> bool:
        """Whether this thread is making a kept value now."""
        return getattr(self._tls, "depth", 0) > 0

    def get(self, key: object, make: Callable[[], T]) -> T:
        """The value kept under `key`, made by `make()` on first use."""
        if (found := self._values.get(key)) is not None:
            return found  # ops call this on every use: no lock once it is made
        with self._lock:
            if key not in self._values:
                self._tls.depth = getattr(self._tls, "depth", 0) + 1
                try:
                    self._values[key] = make()
                finally:
                    self._tls.depth -= 1
            return self._values[key]
