"""The last few files' parsed headers, by (device, inode, size, modification time): one load
opens the same file many times (each model family's detector opens it to look at its keys: 28
parses of SD 1.5's 1,130-entry safetensors header in one txt2img process, 8 readings of a FLUX
GGUF's header at ~0.3 s each). A file written again has another modification time (or size,
or inode) and is read again; one that cannot be read is not kept (its reader says what is
wrong, every time)."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

__all__ = ["ReadOnce"]

T = TypeVar("T")


class ReadOnce(Generic[T]):
    """`read(path)`'s values for the last `size` files, kept while each file is unchanged.
    Callers copy what they will change: the values are shared."""

    def __init__(self, read: Callable[[Path], T], size: int = 8) -> None:
        self._read, self._size = read, size
        self._kept: OrderedDict[tuple[int, int, int, int], T] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, path: Path) -> T:
        try:
            stat = os.stat(path)
        except OSError:
            return self._read(path)  # which says what is wrong
        key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
                return found
        found = self._read(path)
        with self._lock:
            self._kept[key] = found
            while len(self._kept) > self._size:
                self._kept.popitem(last=False)
        return found
