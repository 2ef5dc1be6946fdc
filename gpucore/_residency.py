"""BufferLedger: which of a device's buffers captures hold beyond their Buffer objects.

A capture pins every buffer it replays into (`pin`, `unpin`): the pool never hands one to
anyone else while the capture exists, and one whose Buffer is gone meanwhile (an *orphan*, or
a temporary the capture took from the pool: `adopt`) goes back to the pool when the last
capture pinning it lets go. The open capture's buffers (`recording`) stay out of the pool's
clearing too.

The call's scratch, the temporaries none of whose values outlives the call, holds nothing
between two replays, so a capture can lend it (`Capture.lend`): the buffers go to the pool's
idle lists, where other work of their size class takes them (a VAE decode after the UNet's
steps), and `reclaim` takes the same buffers back before the next replay. The GPU runs the
borrowers' work after the replays recorded before it and before those recorded after the
reclaim, as it does for any pooled buffer. Should one not be idle at the reclaim (its
borrower kept it, another capture pinned it) or the pool drop one meanwhile (`forget`: a
memory cap trimming the pool), the lender is released rather than keep a buffer the pool
counts as freed alive: the caller captures the call again (gpustd.capture does).

The Device owns one ledger and hands it to its captures and its memory cap; nothing else
reads the ledger's books.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Collection, Container, Iterable, KeysView, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

from wgpu.classes import GPUBuffer

from ._pool import BufferPool

__all__ = ["DROPPED_LIMIT", "STALE_GIVES", "BufferLedger", "Lender"]

# Bytes of dropped buffers the device lets the GPU still hold before it waits for the GPU:
# wgpu frees a dropped buffer only once the work submitted with it is done, so a host that
# records far ahead of the GPU and drops what the pool has no room for (Wan 14B's second CFG
# pass under --max-vram: the quantized weights' float scratch, 0.7 GB a block) would
# otherwise hold the driver's figure 34 GiB above the pool's (bench/NOTES.md).
DROPPED_LIMIT = 1 << 30
# Gives after which an idle buffer counts as stale, left by other work (`BufferLedger._room`):
# well past one pass of any model's loop (a FLUX.1 dev step gives back ~1,000 buffers).
STALE_GIVES = 8192


class Lender(Protocol):
    """What lends buffers to the pool (a Capture): released when one of them is lost."""

    def release(self) -> None: ...


class BufferLedger:
    """The pinned, orphaned and lent buffers of one device (see the module doc). `lock` is
    the device's; `evict(buffer)` drops the bind groups naming a buffer that leaves for good."""

    def __init__(self, pool: BufferPool, lock: AbstractContextManager[Any],
                 evict: Callable[[GPUBuffer], None]) -> None:
        self.pool = pool
        self.lock = lock
        self._evict = evict
        self._pinned: dict[int, int] = {}  # id(wgpu buffer) -> captures replaying into it
        self._orphans: dict[int, int] = {}  # pinned buffers no Buffer owns -> size class
        self._lent: dict[int, weakref.ref[Lender]] = {}  # a capture's scratch lent to the pool
        self.recording: Mapping[int, GPUBuffer] = {}  # the open capture's buffers, by id
        self.dropped = 0  # bytes forgotten since the device last waited for the GPU

    @property
    def lent(self) -> KeysView[int]:
        """The ids of the buffers lent to the pool now."""
        return self._lent.keys()

    @property
    def pinned(self) -> KeysView[int]:
        """The ids of the buffers some capture pins now."""
        return self._pinned.keys()

    # -- a buffer's way back ----------------------------------------------------------
    def release(self, buffer: GPUBuffer, size: int) -> None:
        """`buffer`'s Buffer is gone: a pinned one stays with its captures (back to the pool
        when they let go), any other goes to the pool (see `give`)."""
        if id(buffer) in self._pinned:
            with self.lock:
                if id(buffer) in self._pinned:
                    self._orphans[id(buffer)] = size
                    return
        self.give(buffer, size)

    def give(self, buffer: GPUBuffer, size: int) -> bool:
        """`buffer` to the pool's idle list; where the pool is full, room is made from stale
        idle buffers (`_room`), else `buffer` is dropped (`forget`). False when it was dropped.
        One the open capture touched stays idle past the pool's limit: the recording names it,
        so dropped it would live on uncounted (and unshared: the capture shares the
        temporaries it finds idle), 17 GiB of Wan 2.2's decode."""
        past_limit = id(buffer) in self.recording
        if not past_limit and self.pool.idle_bytes + size > self.pool.limit:
            self._room(size)
        if self.pool.give(buffer, size, past_limit=past_limit):
            return True
        with self.lock:
            self.forget(buffer)
        return False

    def _room(self, size: int) -> None:
        """Drop idle buffers stale for STALE_GIVES gives, those idle the longest first (never
        lent ones: their captures would record again), where that makes room for `size` bytes
        more. A full pool used to drop every newly freed buffer instead: after
        other work (a float16 FLUX picture, then one with f16 sums) had filled it with sizes
        the new loop never takes, each step made its buffers anew, and past DROPPED_LIMIT
        waited for the GPU (FLUX.1 dev's step 0.37 -> 0.62 s wall; bench/NOTES.md). A loop
        whose own buffers overflow the pool still keeps the ones that fit: they come back
        within a pass, so none of them is stale."""
        with self.lock:
            need = self.pool.idle_bytes + size - self.pool.limit
            if size > self.pool.limit or need <= 0:
                return
            stale = {k: v for k, v in self.pool.stale(STALE_GIVES).items()
                     if k not in self._lent and k not in self.recording}
            if sum(stale.values()) >= need:
                self.drop_idle(need, keep_lent=True, only=stale, oldest=True)

    def forget(self, buffer: GPUBuffer) -> None:
        """`buffer` left the pool for good: drop the bind groups naming it, and the capture that
        lent it (which would keep it alive), so that wgpu frees it (once the GPU is done with
        it: counted in `dropped` until the device waits)."""
        self.dropped += buffer.size
        self._evict(buffer)
        if (ref := self._lent.pop(id(buffer), None)) is not None and (lender := ref()) is not None:
            lender.release()

    def drop_idle(self, nbytes: int | None = None, *, keep_lent: bool = False,
                  only: Container[int] | None = None, spare: Collection[int] = (),
                  oldest: bool = False) -> None:
        """Drop idle pooled buffers, at least `nbytes` of them, the largest first (`oldest`:
        those idle the longest first; None: every one), but never the open capture's (nor,
        with `keep_lent`, lent ones, nor those whose id is in `spare`); with `only`, just
        those whose id is in it."""
        with self.lock:  # and freed under it (an OpenGL device's must be: gpucore._gl)
            keep: Collection[int] = self.recording.keys()
            if keep_lent:
                keep = self._lent.keys() | keep
            if spare:
                keep = {*keep, *spare}
            dropped = self.pool.clear(nbytes, keep=keep, only=only, oldest=oldest)
            while dropped:
                self.forget(dropped.pop())

    # -- pinning ----------------------------------------------------------------------
    def adopt(self, taken: Mapping[int, int]) -> None:
        """Buffers (id -> size class) taken out of the pool for a capture that no Buffer owns:
        back to the pool when unpinned."""
        self._orphans.update(taken)

    def pin(self, buffers: Iterable[GPUBuffer]) -> None:
        """Keep `buffers` out of the pool while a capture replays into them."""
        buffers = list(buffers)
        with self.lock:
            self._orphans.update(self.pool.discard(buffers))
            for b in buffers:
                self._pinned[id(b)] = self._pinned.get(id(b), 0) + 1

    def unpin(self, buffers: Iterable[GPUBuffer]) -> None:
        """Undo `pin`; buffers no Buffer owns any more go back to the pool."""
        with self.lock:
            for b in buffers:
                left = self._pinned.pop(id(b), 1) - 1
                if left:
                    self._pinned[id(b)] = left
                    continue
                size = self._orphans.pop(id(b), None)
                if size is None or not self.pool.give(b, size):
                    # freed (or still owned: its Buffer pools it later), so the groups
                    # naming it must not keep it alive
                    self.forget(b)

    # -- lending ----------------------------------------------------------------------
    def lend(self, lender: Lender, buffer: GPUBuffer) -> bool:
        """Unpin `buffer` for `lender` (under the lock) when it is that capture's alone and no
        Buffer owns it; its lender then hands it to the pool (`give`). Held weakly: dropping
        the lender releases it."""
        key = id(buffer)
        if self._pinned.get(key) != 1 or self._orphans.pop(key, None) is None:
            return False  # another capture replays into it too: not this one's to lend
        del self._pinned[key]
        self._lent[key] = weakref.ref(lender)
        return True

    def reclaim(self, lender: Lender, buffers: Iterable[GPUBuffer]) -> set[int]:
        """Take `lender`'s lent `buffers` back out of the pool, pinned again; the ids taken
        (those not idle now are missing)."""
        buffers = list(buffers)
        with self.lock:
            self.unlend(lender, (id(b) for b in buffers))
            taken = self.pool.discard(buffers)
            self._orphans.update(taken)
            for key in taken:
                self._pinned[key] = self._pinned.get(key, 0) + 1
            return set(taken)

    def unlend(self, lender: Lender, keys: Iterable[int]) -> None:
        """Forget that `lender` (or a collected lender) lent the buffers `keys`."""
        with self.lock:
            for key in keys:
                ref = self._lent.get(key)
                if ref is not None and ref() in (lender, None):
                    del self._lent[key]
