"""A size-class pool of idle wgpu buffers: a warm forward pass allocates nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from wgpu.classes import GPUBuffer

__all__ = ["BufferPool", "size_class"]


def size_class(nbytes: int, max_size: int) -> int:
    """Allocation size for a request: 256-byte steps up to 64 KiB, then 8 steps per power of
    two (at most 12.5% slack), so freed activations fit later requests; never above
    `max_size` unless the request itself is (then the device refuses it)."""
    if nbytes <= 65536:
        rounded = max(256, -(-nbytes // 256) * 256)
    else:
        step = 1 << (nbytes.bit_length() - 4)
        rounded = -(-nbytes // step) * step
    return rounded if rounded <= max_size else max(nbytes, 4)


class BufferPool:
    """Idle buffers by size class, up to `limit` bytes in all.

    Reuse needs no waiting: the GPU executes the queue in order, so work recorded for a
    buffer's new owner runs after its old owner's.
    """

    def __init__(self, limit: int = 4 << 30) -> None:
        self.limit = limit
        self.idle_bytes = 0
        self._free: dict[int, list[GPUBuffer]] = {}
        self._lock = threading.Lock()

    def take(self, size: int) -> GPUBuffer | None:
        """An idle buffer of exactly this size class, or None."""
        with self._lock:
            idle = self._free.get(size)
            if not idle:
                return None
            self.idle_bytes -= size
            return idle.pop()

    def give(self, buffer: GPUBuffer, size: int) -> bool:
        """Keep `buffer` for reuse; False when the pool is full (the caller drops it)."""
        with self._lock:
            if self.idle_bytes + size > self.limit:
                return False
            self._free.setdefault(size, []).append(buffer)
            self.idle_bytes += size
            return True

    def discard(self, buffers: Iterable[GPUBuffer]) -> dict[int, int]:
        """Take these buffers (any iterable of wgpu buffers) out of the idle lists, if there:
        a capture that replays into them must not see them handed to anyone else. Returns
        {id(buffer): size class} of those taken out."""
        wanted = {id(b) for b in buffers}
        taken: dict[int, int] = {}
        with self._lock:
            for size, idle in self._free.items():
                kept = [b for b in idle if id(b) not in wanted]
                taken.update((id(b), size) for b in idle if id(b) in wanted)
                self.idle_bytes -= size * (len(idle) - len(kept))
                idle[:] = kept
        return taken

    def clear(self) -> list[GPUBuffer]:
        """Forget every idle buffer; returns them (the caller drops what references them)."""
        with self._lock:
            dropped = [b for idle in self._free.values() for b in idle]
            self._free.clear()
            self.idle_bytes = 0
            return dropped
