"""Staging: reused mapped buffers that carry uploads and read-backs in overlapped chunks.

What it replaces: wgpu-py's `queue.read_buffer` makes a fresh MAP_READ buffer for every read
(allocated, mapped, copied twice on the host, destroyed), which held read-backs to 0.7 GiB/s
on an H200 (issue 30); `queue.write_buffer` copies the whole upload into a staging buffer wgpu
allocates for that one call.

How: a device keeps two rings of `depth` staging buffers of `chunk` bytes each, made on first
use and kept for the device's life: MAP_READ ones for read-backs, MAP_WRITE ones for uploads.
A transfer moves through its ring chunk by chunk, so the GPU copies one chunk while the host
copies another:

  read:   copy chunk 0 into a slot, submit, map. Then per chunk i: wait for its map, start
          chunk i + 1 (copy into the other slot, submit, map), copy slot i -> host, unmap:
          the GPU copies chunk i + 1 while the host copies chunk i. (Keeping `depth` copies
          in flight instead measured the same, alternated on one H100.) The ring reads back
          at 14-15 GiB/s into an array already touched; into a fresh one (Tensor.numpy) the
          OS maps its pages on first touch, which `_first_touch` does ahead of the copies
          (13.3 GiB/s against 10.4 without, H100).
  write:  per chunk: wait until slot i % depth is mapped again (its last copy has run),
          copy host -> slot, unmap, submit slot -> buffer, map the slot again (asynchronously:
          the map completes once the GPU has run that copy); the last maps are waited for
          before the upload returns, so no map callback fires outside a transfer.

Ordering is the callers' (`Device.read_bytes`, `Device.write_bytes`): they submit everything
recorded on every stream first, so a read sees all work recorded before it and an upload
lands after it. A transfer holds the device lock throughout, so transfers on one device run
one at a time and never interleave their chunks; devices transfer in parallel.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import numpy as np
import wgpu
from wgpu.classes import GPUBuffer, GPUDevice, GPUPromise, GPUQueue

__all__ = ["CHUNK", "DEPTH", "SMALL_WRITE", "STAGING_LIMIT", "Fill", "HostBytes", "Staging"]

# 32 MiB chunks, 2 slots: 64 MiB of mapped memory each way per device. Each chunk pays a
# submit, a map and its wait; on an H100 (2026-11-24, .f16lab-style probe of Staging alone,
# 256 MiB) 8 MiB chunks gave 9-13 GiB/s back and 10-13 up, 32 MiB ones 14.5-15 back and
# 16-19 up, 64 MiB no more; a second slot is all the overlap the ring needs.
CHUNK = 32 << 20
DEPTH = 2
# Uploads below this stay with wgpu's `queue.write_buffer`: it never waits for the GPU (the
# data rides in the next submit), where a ring slot may wait for its previous copy to run,
# behind whatever the queue holds. Per-step constants (timesteps, parameters) are small.
SMALL_WRITE = 1 << 20
# wgpu stages each queue write in memory of its own until a submit completes: a model upload
# with no submit between tensors would hold the weights twice. Bytes written between waits
# (Device.write_bytes waits past it):
STAGING_LIMIT = 64 << 20

# The host copy of each chunk is split over this many threads (numpy's copy
# releases the GIL): one core's memcpy into a fresh result array, page faults included, is
# slower than the bus. Pieces under 1 MiB are not worth a thread.
COPY_THREADS = max(1, min(4, os.cpu_count() or 1))
_PIECE = 1 << 20
_copiers: ThreadPoolExecutor | None = None
_touchers: ThreadPoolExecutor | None = None
_copiers_lock = threading.Lock()

_READ = wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST
_WRITE = wgpu.BufferUsage.MAP_WRITE | wgpu.BufferUsage.COPY_SRC


def _words(nbytes: int) -> int:
    return (nbytes + 3) // 4 * 4  # buffer copies and maps move whole 4-byte words


def _host_copy(dst: np.ndarray, src: np.ndarray) -> None:
    """np.copyto(dst, src) for 1-D uint8 arrays, large ones in pieces on COPY_THREADS threads."""
    global _copiers
    pieces = min(COPY_THREADS, dst.size // _PIECE)
    if pieces <= 1:
        np.copyto(dst, src)
        return
    with _copiers_lock:
        if _copiers is None:
            _copiers = ThreadPoolExecutor(COPY_THREADS - 1, thread_name_prefix="gpucore-copy")
    cuts = [dst.size * k // pieces // 64 * 64 for k in range(pieces)] + [dst.size]
    others = [_copiers.submit(np.copyto, dst[a:b], src[a:b])
              for a, b in itertools.pairwise(cuts[1:])]
    np.copyto(dst[:cuts[1]], src[:cuts[1]])
    for done in others:
        done.result()


def _first_touch(host: np.ndarray, starts: range) -> dict[int, Future[None]]:
    """Zero the pages of a fresh result array chunk by chunk (but the first) on a pool of
    their own, ahead of the copies: the OS maps a fresh array's pages on first touch,
    which done inside the copy held a read-back into a new array to ~8 GiB/s on an H100
    against 14-15 into one touched before. chunk index -> its zeroing."""
    global _touchers
    if len(starts) < 2:
        return {}
    with _copiers_lock:
        if _touchers is None:
            _touchers = ThreadPoolExecutor(COPY_THREADS, thread_name_prefix="gpucore-touch")
    bounds = [*starts, host.size]
    return {i: _touchers.submit(host[a:b].fill, 0)
            for i, (a, b) in enumerate(itertools.pairwise(bounds)) if i}


class Fill:
    """Upload bytes made where they land: `fill(into, start)` writes bytes start:start +
    len(into) of them into `into` (a writable 1-D uint8 array: the mapped staging slot), so a
    file read goes straight into the staging memory, no host array between (the model
    loaders' bfloat16 weights). `nbytes`: how many, a whole number of 4-byte words.
    Device.write_bytes takes one wherever it takes an array."""

    def __init__(self, nbytes: int, fill: Callable[[np.ndarray, int], None]) -> None:
        self.nbytes = nbytes
        self.fill = fill

    def tobytes(self) -> bytes:
        """All the bytes in one host array (a small write, a capture's constant)."""
        out = np.empty(self.nbytes, np.uint8)
        self.fill(out, 0)
        return out.tobytes()


HostBytes = np.ndarray | bytes | Fill  # what an upload takes


def _fill(slot: GPUBuffer, src: np.ndarray | Fill, pos: int, n: int) -> None:
    """Put bytes pos:pos + n of `src` (1-D uint8, or a Fill) at the start of the WRITE-mapped
    `slot`. wgpu-native and Dawn give a writable view of the mapping: copied into on
    COPY_THREADS threads, or filled there; elsewhere `write_mapped` (one memcpy, holding the
    GIL)."""
    view = getattr(slot, "_experimental_get_mapped_range", None)
    if isinstance(src, Fill):
        if view is None:
            part = np.empty(n, np.uint8)
            src.fill(part, pos)
            slot.write_mapped(part, 0)
        else:
            src.fill(np.frombuffer(view(0, _words(n)), np.uint8, count=n), pos)
    elif view is None or n < 2 * _PIECE:
        slot.write_mapped(src[pos:pos + n], 0)
    else:
        _host_copy(np.frombuffer(view(0, _words(n)), np.uint8, count=n), src[pos:pos + n])


class _Handles(Protocol):
    """What the rings need of their device (a gpucore.Device)."""

    wgpu: GPUDevice
    queue: GPUQueue
    limits: dict[str, int]


class Staging:
    """One device's staging rings. `read` and `write` are called by Device with its lock held.

    `buffers_created` counts the staging buffers made: at most 2 x depth for the device's
    life, however many transfers run (a warm transfer allocates nothing).
    """

    def __init__(self, device: _Handles, *, chunk: int = CHUNK, depth: int = DEPTH,
                 small_write: int = SMALL_WRITE) -> None:
        if chunk % 8 or chunk <= 0 or depth < 2:
            raise ValueError(f"staging chunk {chunk} must be a positive multiple of 8 and "
                             f"depth {depth} at least 2 (a read copies into one slot while "
                             "the host copies out of another)")
        # The device's handles, not the Device: no reference cycle to leave to the collector
        self._wgpu, self._queue = device.wgpu, device.queue
        self.chunk = min(chunk, _words(device.limits["max-buffer-size"]) // 8 * 8)
        self.depth = depth
        self.small_write = small_write
        self.held = 0  # bytes of small writes whose wgpu staging copy awaits a submit
        self.buffers_created = 0
        self._read_slots: list[GPUBuffer] = []
        self._write_slots: list[GPUBuffer] = []
        # A write slot's pending re-map (None: mapped and free to fill).
        self._remaps: list[GPUPromise[None] | None] = []
        self._lock = threading.RLock()

    def _make(self, usage: int, mapped: bool, kind: str) -> GPUBuffer:
        self.buffers_created += 1
        return self._wgpu.create_buffer(
            label=f"gpucore staging {kind}", size=self.chunk, usage=usage,
            mapped_at_creation=mapped)

    def _read_slot(self, i: int) -> GPUBuffer:
        while len(self._read_slots) <= i:
            self._read_slots.append(self._make(_READ, False, "read"))
        return self._read_slots[i]

    def _write_slot(self, i: int) -> GPUBuffer:
        while len(self._write_slots) <= i:
            self._write_slots.append(self._make(_WRITE, True, "write"))
            self._remaps.append(None)
        return self._write_slots[i]

    def _copy(self, src: GPUBuffer, src_offset: int, dst: GPUBuffer, dst_offset: int,
              size: int) -> None:
        encoder = self._wgpu.create_command_encoder(label="gpucore staging")
        encoder.copy_buffer_to_buffer(src, src_offset, dst, dst_offset, size)
        self._queue.submit([encoder.finish()])

    def _reset(self) -> None:
        """Forget every slot after a failed transfer (their map states are unknown)."""
        for slot in (*self._read_slots, *self._write_slots):
            try:
                slot.destroy()
            except Exception:  # already lost with the device; nothing to free
                pass
        self._read_slots, self._write_slots, self._remaps = [], [], []

    # -- read-back ----------------------------------------------------------------------
    def read(self, buffer: GPUBuffer, offset: int, size: int,
             out: np.ndarray | None = None) -> memoryview:
        """`size` bytes of `buffer` from byte `offset`, copied into `out` (a contiguous numpy
        array of `size` bytes, any dtype) or a new array; returns them as a memoryview.
        `offset` must be a multiple of 4; the copy rounds the size up to whole words, which
        the buffer must hold (gpucore pads every buffer to them)."""
        host = np.empty(size, np.uint8) if out is None else out
        touched = _first_touch(host, range(0, size, self.chunk)) if out is None else {}
        if not host.flags.c_contiguous:
            raise ValueError("read_bytes needs a C-contiguous `out` (it is written in place)")
        dst = host.reshape(-1).view(np.uint8)
        if dst.size != size or offset % 4 or offset < 0 or offset + _words(size) > buffer.size:
            raise ValueError(f"cannot read {size} bytes at offset {offset} of a {buffer.size}"
                             f"-byte buffer into {dst.size} bytes (offsets are multiples of "
                             "4, within the buffer)")
        starts = range(0, size, self.chunk)
        pending: dict[int, GPUPromise[None]] = {}

        def start(i: int) -> None:
            n = _words(min(self.chunk, size - starts[i]))
            slot = self._read_slot(i % self.depth)
            self._copy(buffer, offset + starts[i], slot, 0, n)
            pending[i] = slot.map_async(wgpu.MapMode.READ, 0, n)

        with self._lock:
            try:
                start(0)
                for i, pos in enumerate(starts):
                    n = min(self.chunk, size - pos)
                    pending.pop(i).sync_wait()
                    if i + 1 < len(starts):
                        start(i + 1)  # the latest submission: its map is the next one waited
                    slot = self._read_slots[i % self.depth]
                    if i in touched:
                        touched.pop(i).result()
                    _host_copy(dst[pos:pos + n], np.frombuffer(
                        slot.read_mapped(0, _words(n), copy=False), np.uint8, count=n))
                    slot.unmap()
            except BaseException:
                self._reset()
                raise
        return memoryview(dst)  # type: ignore[arg-type]

    # -- upload ---------------------------------------------------------------------------
    def write(self, buffer: GPUBuffer, offset: int, data: HostBytes) -> None:
        """Copy the bytes of `data` (contiguous, any dtype, or a Fill; a whole number of
        4-byte words) into `buffer` at byte `offset` (a multiple of 4). Returns once the last
        chunk is submitted; the GPU runs the copies in queue order, before any later work.
        Below `small_write` bytes (SMALL_WRITE) this is wgpu's `queue.write_buffer`."""
        src: np.ndarray | Fill
        if isinstance(data, Fill):
            src, size = data, data.nbytes
        else:
            src = (np.frombuffer(data, np.uint8) if isinstance(data, bytes)
                   else np.ascontiguousarray(data).reshape(-1).view(np.uint8))
            size = src.size
        if offset % 4 or size % 4 or offset < 0 or offset + size > buffer.size:
            raise ValueError(f"cannot write {size} bytes at offset {offset} of a {buffer.size}"
                             "-byte buffer (whole 4-byte words, within the buffer)")
        if size < self.small_write:
            self._queue.write_buffer(
                buffer, offset, src.tobytes() if isinstance(src, Fill) else src)
            self.held += size  # wgpu's own staging copy, freed when a submit completes
            return
        with self._lock:
            try:
                for i, pos in enumerate(range(0, size, self.chunk)):
                    n = min(self.chunk, size - pos)
                    k = i % self.depth
                    slot = self._write_slot(k)
                    remap, self._remaps[k] = self._remaps[k], None
                    if remap is not None:
                        remap.sync_wait()  # the slot's previous copy has run
                    _fill(slot, src, pos, n)
                    slot.unmap()
                    self._copy(slot, 0, buffer, offset + pos, n)
                    self._remaps[k] = slot.map_async(wgpu.MapMode.WRITE, 0, self.chunk)
                for k, remap in enumerate(self._remaps):  # no map left to complete later,
                    if remap is not None:  # its callback running into whatever runs then
                        remap.sync_wait()
                        self._remaps[k] = None
            except BaseException:
                self._reset()
                raise
