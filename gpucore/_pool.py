"""A size-class pool of idle wgpu buffers (a warm forward pass allocates nothing), and the
count of the device memory it and the live buffers hold (`Device.memory_stats()`)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import asdict, dataclass

from wgpu.classes import GPUBuffer

from ._memtrace import MemoryTrace

__all__ = ["BufferPool", "MemoryStats", "exact_size", "is_released", "size_class"]


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


def exact_size(nbytes: int) -> int:
    """Allocation size for a buffer that is kept, not reused (weights): `nbytes` in 256-byte
    steps. Size classes would waste up to 12.5% of every weight (~100 MiB on SD 1.5)."""
    return max(256, -(-nbytes // 256) * 256)


def is_released(buffer: GPUBuffer) -> bool:
    """Whether wgpu freed `buffer`, or will: its finalizer ran (`gc.is_finalized`; wgpu-py
    clears the handle then). The pool holds every buffer it counts (`BufferPool._held`), so a
    Buffer collected in a reference cycle no longer takes its wgpu buffer into the garbage;
    this catches what else drops one (the device's own garbage, a buffer released by hand)."""
    return getattr(buffer, "_internal", True) is None or gc.is_finalized(buffer)


@dataclass(frozen=True)
class MemoryStats:
    """Device memory a gpucore Device holds, in bytes (torch.cuda's names in brackets).

    allocated: buffers in use, by a Buffer or a capture replaying into them, counted at their
        size class [memory_allocated]; pooled: idle buffers the pool keeps for reuse;
        reserved: the two together, what the device really holds [memory_reserved];
        peak_allocated / peak_reserved: their highest values since the device was made or
        `reset_peak_memory()` [max_memory_allocated / max_memory_reserved].
    Not counted: a few fixed KiB of the device's own (uniform ring, fences, timestamp queries)
    and a capture's constant uploads.
    """

    allocated: int
    pooled: int
    reserved: int
    peak_allocated: int
    peak_reserved: int

    def as_dict(self) -> dict[str, int]:
        """The figures as a JSON-ready dict."""
        return asdict(self)


class BufferPool:
    """Idle buffers by size class, up to `limit` bytes in all, and the bytes in use.

    Reuse needs no waiting: the GPU executes the queue in order, so work recorded for a
    buffer's new owner runs after its old owner's. Every buffer the device allocates passes
    through here (`take` or `created`, then `give` or `dropped`), so the counts are exact.

    The lock is reentrant, and the idle lists are walked over copies: a garbage collection
    that runs inside a locked method (any allocation may start one) can collect a Buffer,
    whose `__del__` gives its buffer back here on the same thread. With a plain lock that
    thread waited on itself (a capture's `discard`, its `choose` planning the temporaries,
    hung a CI run).
    """

    def __init__(self, limit: int = 4 << 30) -> None:
        self.limit = limit
        self.idle_bytes = 0
        self.in_use = 0
        # Every buffer counted in use, by id: reachable from here, a buffer is never garbage
        # with its Buffer. Held only by a Buffer in a reference cycle, it was: the collector
        # ran the Buffer's __del__ (pooling it), then the buffer's own finalizer (wgpu-py
        # releases the native buffer), and another thread could take it from the pool in
        # between: a server's loading thread wrote into a released buffer (a TypeError) or
        # bound one (wgpu-native aborted the process). tests/gpucore/test_buffer_cycles.py
        self._held: dict[int, GPUBuffer] = {}
        self._peak_in_use = self._peak_total = 0
        self._gives = 0
        self._given: dict[int, int] = {}  # id of an idle buffer -> its give's number
        self._free: dict[int, list[GPUBuffer]] = {}
        self._lock = threading.RLock()  # reentrant: see the class doc
        self.trace: MemoryTrace | None = None  # gpucore.trace_memory's, while one is open

    def _grow(self, size: int, buffer: GPUBuffer, pinned: bool = False) -> None:
        self._held[id(buffer)] = buffer
        self.in_use += size
        self._peak_in_use = max(self._peak_in_use, self.in_use)
        self._peak_total = max(self._peak_total, self.in_use + self.idle_bytes)
        if self.trace is not None:
            self.trace.grew(buffer, size, self.in_use, pinned)

    def _shrink(self, size: int, buffer: GPUBuffer) -> None:
        self._held.pop(id(buffer), None)
        self.in_use -= size
        if self.trace is not None:
            self.trace.shrank(buffer, size)

    def take(self, size: int, avoid: Container[int] = ()) -> GPUBuffer | None:
        """An idle buffer of exactly this size class (now counted in use), or None; none whose
        id is in `avoid` (a capture's lent scratch, for a value kept for good)."""
        with self._lock:
            idle = self._free.get(size, [])
            for i in range(len(idle) - 1, -1, -1):  # the last given first
                if id(idle[i]) in avoid:
                    continue
                found = idle.pop(i)
                self.idle_bytes -= size
                self._given.pop(id(found), None)
                if not is_released(found):  # wgpu freed it already: forget it
                    self._grow(size, found)
                    return found
            return None

    def created(self, buffer: GPUBuffer, size: int) -> None:
        """Count a new allocation, `buffer` of `size` bytes, as in use."""
        with self._lock:
            self._grow(size, buffer)

    def dropped(self, buffer: GPUBuffer, size: int) -> None:
        """Count an in-use `buffer` of `size` bytes as freed (no longer referenced)."""
        with self._lock:
            self._shrink(size, buffer)

    def give(self, buffer: GPUBuffer, size: int, *, past_limit: bool = False) -> bool:
        """Keep an in-use `buffer` for reuse; False when the pool is full (the caller drops
        it, and it is counted freed). `past_limit`: kept even then (an open capture's
        temporary, which the capture keeps alive whatever the pool does)."""
        with self._lock:
            self._shrink(size, buffer)
            self._gives += 1  # every buffer that comes back counts (`stale`'s clock)
            if self.idle_bytes + size > self.limit and not past_limit:
                return False
            self._free.setdefault(size, []).append(buffer)
            self.idle_bytes += size
            self._given[id(buffer)] = self._gives
            return True

    def discard(self, buffers: Iterable[GPUBuffer],
                choose: Callable[[dict[int, int]], Container[int]] | None = None
                ) -> dict[int, int]:
        """Take these buffers (any iterable of wgpu buffers) out of the idle lists, if there:
        a capture that replays into them must not see them handed to anyone else (so they
        count as in use). `choose({id: size class} of those idle)` (under the pool's lock)
        picks the ids to take; None: all. Returns {id(buffer): size class} of those taken."""
        wanted = {id(b) for b in buffers}
        with self._lock:
            idle_sizes = {id(b): size for size, idle in list(self._free.items()) for b in idle
                          if id(b) in wanted}
            chosen = idle_sizes if choose is None else choose(idle_sizes)
            taken: dict[int, int] = {}
            for size, idle in list(self._free.items()):
                for b in list(idle):
                    if id(b) in chosen and id(b) in wanted:
                        taken[id(b)] = size
                        self._given.pop(id(b), None)
                        self.idle_bytes -= size
                        self._grow(size, b, pinned=True)
                idle[:] = [b for b in idle if id(b) not in taken]
        return taken

    def clear(self, nbytes: int | None = None, keep: Container[int] = (),
              only: Container[int] | None = None, *, oldest: bool = False) -> list[GPUBuffer]:
        """Forget idle buffers, the largest first (`oldest`: those idle the longest first),
        until at least `nbytes` are gone (None: every one), but those whose id is in `keep`
        (an open capture's: it holds them, so forgetting them would not free them); with
        `only`, just those whose id is in it. Returns them (the caller drops what references
        them)."""
        with self._lock:
            candidates = [(size, buffer) for size in sorted(self._free, reverse=True)
                          for buffer in self._free[size]
                          if id(buffer) not in keep and (only is None or id(buffer) in only)]
            if oldest:
                candidates.sort(key=lambda found: self._given.get(id(found[1]), 0))
            dropped: list[GPUBuffer] = []
            for size, buffer in candidates:
                if nbytes is not None and nbytes <= 0:
                    break
                dropped.append(buffer)
                self.idle_bytes -= size
                self._given.pop(id(buffer), None)
                nbytes = None if nbytes is None else nbytes - size
            gone = {id(buffer) for buffer in dropped}
            for size, idle in list(self._free.items()):  # in place: a give may come meanwhile
                idle[:] = [b for b in idle if id(b) not in gone]
                if not idle:
                    del self._free[size]
            return dropped

    def spare(self, sizes: Sequence[int]) -> tuple[set[int], list[int]]:
        """What `take`s of these size classes, one each in turn, would find: the ids of the
        idle buffers they would hand out, and the indices of the sizes none is idle for."""
        with self._lock:
            handed: dict[int, int] = {}
            ids: set[int] = set()
            missing: list[int] = []
            for i, size in enumerate(sizes):
                idle, n = self._free.get(size, ()), handed.get(size, 0)
                if n < len(idle):
                    ids.add(id(idle[-1 - n]))  # take pops the last first
                    handed[size] = n + 1
                else:
                    missing.append(i)
            return ids, missing

    def stale(self, age: int) -> dict[int, int]:
        """{id: size class} of the idle buffers pooled `age` or more gives ago (a give: any
        buffer that comes back, kept or not): what other work left (another model, picture
        size or setting), where a loop's own buffers come back within one of its passes."""
        with self._lock:
            last = self._gives - age
            return {id(b): size for size, idle in list(self._free.items()) for b in list(idle)
                    if self._given.get(id(b), last + 1) <= last}

    def idle_ids(self) -> set[int]:
        """The ids of the idle buffers now."""
        with self._lock:
            return {id(b) for idle in list(self._free.values()) for b in list(idle)}

    def stats(self) -> MemoryStats:
        """The counts now (see MemoryStats)."""
        with self._lock:
            return MemoryStats(self.in_use, self.idle_bytes, self.in_use + self.idle_bytes,
                               self._peak_in_use, self._peak_total)

    def reset_peak(self) -> None:
        """Start the peaks again from the current counts."""
        with self._lock:
            self._peak_in_use = self.in_use
            self._peak_total = self.in_use + self.idle_bytes
