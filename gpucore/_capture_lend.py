"""A capture's buffers: pinned while it exists, its scratch lent to the pool between replays.

Pinning keeps every buffer a capture replays into out of the pool (`pin`, `unpin`). The
call's scratch, the temporaries none of whose values outlives the call, holds nothing
between two replays, so a capture can lend it (`Capture.lend`): the buffers go to the pool's
idle lists, where other work of their size class takes them (a VAE decode after the UNet's
steps), and `reclaim` takes the same buffers back before the next replay. The GPU runs the
borrowers' work after the replays recorded before it and before those recorded after the
reclaim, as it does for any pooled buffer. Should one not be idle at the reclaim (its
borrower kept it, another capture pinned it) or the pool drop one meanwhile (`forget`: a
memory cap trimming the pool), the capture releases itself rather than keep a buffer the
pool counts as freed alive: the caller captures the call again (gpustd.capture does).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wgpu.classes import GPUBuffer

    from ._capture import Capture
    from ._device import Device

__all__ = ["forget", "lend", "pin", "reclaim", "unlend", "unpin"]


def lend(capture: Capture) -> int:
    """Capture.lend: the scratch to the pool; the bytes lent."""
    dev = capture.device
    if capture.lent or capture.closed or not capture._pinned or not capture._scratch:
        return 0
    with dev._lock:
        if dev.pool.idle_bytes + capture.scratch_bytes > dev.pool.limit:
            return 0  # the pool would drop some: keep them
        capture.lent = True
        for key, size in list(capture._scratch.items()):
            if dev._pinned.get(key) != 1 or dev._orphans.pop(key, None) is None:
                continue  # another capture replays into it too: not this one's to lend
            del dev._pinned[key]
            dev._lent[key] = weakref.ref(capture)  # weak: dropping the capture releases it
            capture._unpinned.add(key)
            buffer = capture._buffers[key]
            if not dev.pool.give(buffer, size):  # filled meanwhile (another thread)
                forget(dev, buffer)
                return 0
    return sum(capture._scratch[key] for key in capture._unpinned)


def reclaim(capture: Capture) -> bool:
    """Capture.reclaim: the lent scratch pinned again; False when the capture had to go."""
    if not capture.lent:
        return not capture.closed
    dev = capture.device
    with dev._lock:
        capture.lent = False
        unlend(dev, capture)
        taken = dev.pool.discard(capture._buffers[key] for key in capture._unpinned)
        dev._orphans.update(taken)
        for key in taken:
            dev._pinned[key] = dev._pinned.get(key, 0) + 1
        capture._unpinned -= taken.keys()
        if capture._unpinned:
            capture.release()
    return not capture.closed


def unlend(dev: Device, capture: Capture) -> None:
    """Forget that `capture` (or a collected capture) lent its unpinned scratch."""
    for key in capture._unpinned:
        ref = dev._lent.get(key)
        if ref is not None and ref() in (capture, None):
            del dev._lent[key]


def forget(dev: Device, buffer: GPUBuffer) -> None:
    """`buffer` left the pool for good: drop the bind groups naming it, and the capture that
    lent it (which would keep it alive), so that wgpu frees it."""
    dev._bind_groups.evict(buffer)
    if (ref := dev._lent.pop(id(buffer), None)) is not None and (capture := ref()) is not None:
        capture.release()


def pin(dev: Device, buffers: Iterable[GPUBuffer]) -> None:
    """Keep `buffers` out of the pool while a capture replays into them."""
    buffers = list(buffers)
    with dev._lock:
        dev._orphans.update(dev.pool.discard(buffers))
        for b in buffers:
            dev._pinned[id(b)] = dev._pinned.get(id(b), 0) + 1


def unpin(dev: Device, buffers: Iterable[GPUBuffer]) -> None:
    """Undo `pin`; buffers no Buffer owns any more go back to the pool."""
    with dev._lock:
        for b in buffers:
            left = dev._pinned.pop(id(b), 1) - 1
            if left:
                dev._pinned[id(b)] = left
                continue
            size = dev._orphans.pop(id(b), None)
            if size is None or not dev.pool.give(b, size):
                # freed (or still owned: its Buffer pools it later), so the groups
                # naming it must not keep it alive
                forget(dev, b)
