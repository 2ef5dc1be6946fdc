"""A cap on the device memory a Device holds (torch: `set_per_process_memory_fraction`).

    device.memory_limit.set(4 << 30, evict=free_one)  # free_one(): True when it freed some
    ...
    device.memory_limit.release(free_one)             # the cap goes with its last evictor

The cap is kept at every new allocation, so it holds at the peak, not at chosen moments: a
buffer the pool cannot hand out from its idle lists is made only when the live buffers, the
idle ones and it fit under the cap together (`memory_stats().reserved`, the pool's reserve
included). Otherwise idle buffers are dropped, those idle the longest first (the running
work's own, reused at every block or layer, are idle the shortest), then the evictors are
asked to free live ones (callers that can move weights to host memory: gpustd.nn.residency;
several when pipelines share the device, a base and its refiner) one call at a time until the
buffer fits; when none has anything left, garbage is collected once (a buffer held only by
objects in a reference cycle is freed by Python's cycle collector, whenever it runs), and then
MemoryLimitError says how much the device needs there.

`frugal()` is the cap's milder kin for eager work whose size classes change as it goes (a VAE
decode climbing resolutions): while it is open, a buffer the pool cannot hand out first makes
the pool drop its idle buffers (a capture's lent scratch excepted), so the reserve follows
what is in use instead of keeping each size class's own high at once. The next such block
makes those buffers anew: a few dozen wgpu allocations and their zero fill.

What is counted is what `memory_stats()` counts; wgpu frees a dropped buffer's memory once the
GPU has finished the work already submitted with it, so the driver's figure can lag by what the
last few hundred dispatches used.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Collection, Container, Iterator, Sequence

from wgpu.classes import GPUBuffer

from ._errors import MemoryLimitError
from ._pool import exact_size
from ._residency import BufferLedger

__all__ = ["MemoryLimit"]


class MemoryLimit:
    """A Device's memory cap (see the module doc); `bytes` None: no cap. It keeps the cap on
    the device's pool through the device's BufferLedger (which buffers captures hold)."""

    def __init__(self, ledger: BufferLedger) -> None:
        self._ledger = ledger
        self._pool = ledger.pool
        self.bytes: int | None = None
        self.evictors: list[Callable[[], bool]] = []
        self._evicting = False
        self._frugal = 0  # open frugal() blocks

    def __repr__(self) -> str:
        return f"<MemoryLimit {self.bytes}>"

    def set(self, nbytes: int | None, *, evict: Callable[[], bool] | None = None) -> None:
        """Cap the device at `nbytes` (None: lift the cap and forget the evictors). `evict()`
        (added to the evictors) frees some live device memory and returns True, or returns
        False when it has nothing left to free. The pool's reserve is trimmed to the cap now."""
        if nbytes is not None and nbytes <= 0:
            raise ValueError(f"a memory limit is a number of bytes > 0, got {nbytes}")
        self.bytes = nbytes
        if nbytes is None:
            self.evictors.clear()
        elif evict is not None and evict not in self.evictors:
            self.evictors.append(evict)
        if nbytes is not None:
            stats = self._pool.stats()
            if stats.reserved > nbytes:
                self._ledger.drop_idle(stats.reserved - nbytes)

    def make_room(self, size: int, what: str, avoid: Container[int] = ()) -> GPUBuffer | None:
        """Make the device's reserve room for a new buffer of `size` bytes (a size class; called
        by Device.allocate before it creates one), or raise MemoryLimitError. Returns an idle
        buffer of that size class when an eviction left one (the pool's: reuse it; none whose id is
        in `avoid`, as BufferPool.take), else None."""
        if self._frugal:
            self._drop_idle()
        if self.bytes is None:
            return None
        collected = False
        while True:
            stats = self._pool.stats()
            over = stats.reserved + size - self.bytes
            if over <= 0:
                return None
            if stats.pooled and self.trim(over, stats.pooled):
                continue
            if self._evicting:
                return None  # the eviction's own read-back (a weight with no host copy)
            if not self._evict_one():
                if not collected:  # garbage Python has not collected yet (objects in
                    collected = True  # reference cycles) may hold buffers: theirs go idle
                    gc.collect()
                    continue
                raise MemoryLimitError(self.bytes, stats.reserved + size,
                                       f"{what} ({size:,} bytes)")
            if (found := self._pool.take(size, avoid)) is not None:
                return found

    @contextlib.contextmanager
    def frugal(self) -> Iterator[None]:
        """While the block runs, a new buffer first drops the pool's idle buffers (see the
        module doc). torch has no such mode; its allocator splits cached blocks instead."""
        self._frugal += 1
        try:
            yield
        finally:
            self._frugal -= 1

    def _drop_idle(self) -> None:
        self._ledger.drop_idle(keep_lent=True)

    def trim(self, nbytes: int, pooled: int, *, spare: Collection[int] = ()) -> bool:
        """Drop idle buffers, at least `nbytes` (`pooled`: the pool's idle bytes now), those
        idle the longest first (the running work's own, reused at every block or layer, are
        idle the shortest), but those whose id is in `spare`; False when none could go (an
        open capture holds every idle one, or all are spared). Also gpustd.nn.residency's way
        of making room."""
        self._ledger.drop_idle(nbytes, spare=spare, oldest=True)
        return self._pool.stats().pooled < pooled

    def spare(self, weights: Sequence[int]) -> tuple[Collection[int], list[int]]:
        """For the upload of read-only buffers (weights) of these byte sizes: the ids of the
        idle buffers it would reuse (spare them when trimming: the weights of a unit just
        evicted, which a unit of the same layout takes next), and the byte sizes of the
        weights it must allocate anew."""
        ids, missing = self._pool.spare([exact_size(nbytes) for nbytes in weights])
        return ids, [weights[i] for i in missing]

    def release(self, evict: Callable[[], bool]) -> None:
        """Forget evictor `evict`; the cap goes with the last one."""
        if evict in self.evictors:
            self.evictors.remove(evict)
            if not self.evictors:
                self.bytes = None

    def _evict_one(self) -> bool:
        self._evicting = True
        try:
            return any(evict() for evict in list(self.evictors))
        finally:
            self._evicting = False
