"""Capture and replay: a call's dispatch stream recorded once, then re-encoded with no op logic.

The role CUDA Graphs play for PyTorch. While a capture is open the device runs everything as
usual *and* keeps a list of what it recorded: pipelines and bind groups, params (uniform)
values, grids, copies, clears, host writes. `Capture.replay()` re-encodes that list into the
current stream with 3 wgpu calls per dispatch and nothing else.

Rules (checked where they can be):

- Every wgpu buffer the capture touched is pinned: it stays alive, and the pool never hands
  it to anyone else while the capture exists. Buffers that were temporaries of the call are
  reused by the replay exactly as the first run reused them.
- Inputs: write new values into the buffers the captured call read (`Buffer.write`,
  `copy_from`) *outside* the capture, then replay. Results land in the same buffers the
  first run wrote: a replay overwrites them (copy what you need to keep).
- Host writes made *during* the capture (a `Buffer.write`, `from_numpy` of a constant) are
  baked in: the replay repeats them at the same point with the same bytes, through a copy
  from a constants buffer. So a value the call computed on the host from its arguments is a
  constant of the capture; pass such values in a device buffer instead to vary them.
- Reading back inside a capture raises CaptureError: the replay could not repeat the host
  logic that used the value. Events cannot be recorded inside one either.
- Shapes, dtypes and which buffers are used are fixed by the capture: a different shape
  needs a new capture (gpustd.capture keys captures by shapes and dtypes and does that).
- Between replays the call's scratch (temporaries no value outlives) can be lent to other
  work: `lend()` hands it to the pool (memory_stats counts it idle, not allocated), and
  `reclaim()` (the next replay does it too) takes the same buffers back. Where one is not
  idle then (another owner kept it) or the pool dropped one meanwhile, the capture releases
  itself: capture the call again (gpustd.capture does).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Protocol

import wgpu
from wgpu.classes import (
    GPUBindGroup,
    GPUBindGroupLayout,
    GPUBuffer,
    GPUComputePassEncoder,
    GPUComputePipeline,
    GPUDevice,
    GPUQueue,
)

from ._bindings import BindGroupCache
from ._capture_share import plan, remap
from ._errors import GpuError
from ._pipelines import resolved
from ._pool import BufferPool
from ._profile import Profile
from ._residency import BufferLedger
from ._stream import Stream

__all__ = ["Capture", "CaptureError", "CaptureHost"]

# wgpu-py's own methods cost ~1 us of Python each; on wgpu-native a replay calls the C
# functions behind them directly with handles prepared once (the same calls, minus the
# wrapper). Other runtimes (Dawn) go through the public methods. False forces the latter.
NATIVE_REPLAY = True
_NATIVE_MODULE = "wgpu.backends.wgpu_native._api"


# The C functions behind set_pipeline, set_bind_group and dispatch_workgroups (cffi).
NativeFunctions = tuple[Callable[..., None], Callable[..., None], Callable[..., None]]


def native_pass_functions(compute: GPUComputePassEncoder) -> NativeFunctions | None:
    """(set_pipeline, set_bind_group, dispatch) C functions for `compute`'s runtime, or None
    where the pass is not wgpu-native's."""
    if not NATIVE_REPLAY or type(compute).__module__ != _NATIVE_MODULE:
        return None
    libf = sys.modules[_NATIVE_MODULE].libf  # type: ignore[attr-defined]
    return (libf.wgpuComputePassEncoderSetPipeline, libf.wgpuComputePassEncoderSetBindGroup,
            libf.wgpuComputePassEncoderDispatchWorkgroups)


def _native_handles(pipeline: GPUComputePipeline, group: GPUBindGroup,
                    offsets: tuple[int, ...]) -> tuple | None:
    if type(pipeline).__module__ != _NATIVE_MODULE:
        return None
    ffi = sys.modules[_NATIVE_MODULE].ffi  # type: ignore[attr-defined]
    c_offsets = ffi.new("uint32_t[]", list(offsets)) if offsets else ffi.NULL
    return pipeline._internal, group._internal, len(offsets), c_offsets


class CaptureHost(Protocol):
    """What a capture needs of its device (a gpucore.Device)."""

    wgpu: GPUDevice
    queue: GPUQueue
    limits: dict[str, int]
    pool: BufferPool
    ledger: BufferLedger  # its buffers' pins and loans (gpucore._residency)
    bind_groups: BindGroupCache
    buffers_created: int
    capturing: Capture | None  # the open capture: set by Capture under the ledger's lock
    profiling: Profile | None
    default_stream: Stream

    @property
    def name(self) -> str: ...

    @property
    def current_stream(self) -> Stream: ...

    def encode_dispatch(self, stream: Stream, pipeline: GPUComputePipeline, group: GPUBindGroup,
                        offsets: Sequence[int], workgroups: tuple[int, int, int],
                        label: str) -> None: ...


class CaptureError(GpuError):
    """Something a capture cannot repeat was done inside it (a read-back, an event), or a
    capture was used wrongly (replayed while open, nested)."""


class Capture:
    """The recorded command stream of one call on one device. Make with `device.capture()`::

        with device.capture() as graph:
            out = model(x)        # runs now, and is recorded
        x.buffer.write(new)       # new input, same buffer
        graph.replay()            # `out` now holds model(new)
    """

    def __init__(self, device: CaptureHost) -> None:
        self.device = device
        self._ledger = device.ledger
        self.commands: list[tuple] = []  # as recorded; finalized into self._ops on exit
        self._ops: list[tuple] = []
        self._buffers: dict[int, GPUBuffer] = {}  # id -> wgpu buffer: everything pinned
        # params/constants buffers and bind groups of the replay
        self._keep: list[GPUBuffer | GPUBindGroup] = []
        self.open = False
        self.closed = False
        self._pinned = False
        # id -> size class: temporaries whose values begin and end inside the call (lendable)
        self._scratch: dict[int, int] = {}
        self.lent = False  # the scratch is the pool's until reclaim()
        self._unpinned: set[int] = set()  # lent scratch not pinned by this capture

    def __repr__(self) -> str:
        return (f"<Capture of {self.dispatches} dispatches, {len(self._buffers)} buffers on "
                f"{self.device.name!r}>")

    @property
    def dispatches(self) -> int:
        return sum(1 for op in self._ops if op[0] == "dispatch")

    # -- recording (the device calls these under its lock) ----------------------------
    def __enter__(self) -> Capture:
        dev = self.device
        with self._ledger.lock:
            if dev.capturing is not None:
                raise CaptureError("a capture is already open on this device; captures do "
                                   "not nest, nor does a replay run inside one: capture the "
                                   "whole call in one block")
            dev.capturing = self
            self._ledger.recording = self._buffers
        self.open = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.open = False
        with self._ledger.lock:
            self.device.capturing = None
            self._ledger.recording = {}
        if exc_type is None:
            self._finalize()
        else:
            self.release()

    def _touch(self, buffer: GPUBuffer) -> None:
        self._buffers[id(buffer)] = buffer

    def add_dispatch(self, pipeline: GPUComputePipeline, layout: GPUBindGroupLayout,
                     entries: list[tuple[GPUBuffer, int, int]], params: bytes | None,
                     grid: tuple[int, int, int], label: str) -> None:
        for b, _, _ in entries:
            self._touch(b)
        self.commands.append(("dispatch", pipeline, layout, tuple(entries), params, grid, label))

    def add_copy(self, src: GPUBuffer, src_offset: int, dst: GPUBuffer, dst_offset: int,
                 size: int) -> None:
        self._touch(src)
        self._touch(dst)
        self.commands.append(("copy", src, src_offset, dst, dst_offset, size))

    def add_alloc(self, buffer: GPUBuffer) -> None:
        """`buffer` was just handed out: what it holds from now on is a new value."""
        self.commands.append(("alloc", buffer))

    def add_clear(self, buffer: GPUBuffer, size: int) -> None:
        self._touch(buffer)
        self.commands.append(("clear", buffer, size))

    def add_write(self, buffer: GPUBuffer, offset: int, data: bytes) -> None:
        self._touch(buffer)
        self.commands.append(("write", buffer, offset, data))

    # -- finalizing: params and host writes into buffers of the capture's own ---------
    def _finalize(self) -> None:
        dev = self.device
        self._share_temporaries()
        stride = max(dev.limits.get("min-uniform-buffer-offset-alignment", 256), 256)
        params = [c[4] for c in self.commands if c[0] == "dispatch" and c[4] is not None]
        writes = [c[3] for c in self.commands if c[0] == "write"]
        uniform = consts = None
        if params:
            blob = bytearray(stride * len(params))
            for i, p in enumerate(params):
                blob[i * stride:i * stride + len(p)] = p
            uniform = self._upload(blob, wgpu.BufferUsage.UNIFORM, "gpucore capture params")
        if writes:
            blob = bytearray()
            for w in writes:
                blob += w + bytes(-len(w) % 4)
            consts = self._upload(blob, wgpu.BufferUsage.COPY_SRC, "gpucore capture constants")
        groups: dict[tuple, GPUBindGroup] = {}
        slot = const_at = 0
        for c in self.commands:
            kind = c[0]
            if kind == "dispatch":
                _, pipeline, layout, entries, p, grid, label = c
                pipeline = resolved(pipeline)  # a gpucore.Pending while it was built
                offsets: tuple[int, ...] = ()
                if p is not None:
                    entries = (*entries, (uniform, 0, len(p)))
                    offsets = (slot * stride,)
                    slot += 1
                key = (id(layout), *((id(b), o, s) for b, o, s in entries))
                group = groups.get(key)
                if group is None:
                    group = groups[key] = dev.bind_groups.create(layout, entries)
                self._ops.append(("dispatch", pipeline, group, offsets, grid, label,
                                  _native_handles(pipeline, group, offsets)))
            elif kind == "write":
                _, buffer, offset, data = c
                self._ops.append(("copy", consts, const_at, buffer, offset, len(data)))
                const_at += len(data) + (-len(data) % 4)
            else:
                self._ops.append(c)
        self._keep += [x for x in (uniform, consts) if x is not None]
        self._keep += list(groups.values())
        self.commands = []
        self._ledger.pin(self._buffers.values())
        self._pinned = True

    def _share_temporaries(self) -> None:
        """The call's temporaries (buffers it touched that no Buffer owns: idle in the pool
        now) share buffers by lifetime (gpucore._capture_share); those it no longer needs
        are freed, the others are the capture's from now on."""
        ledger = self._ledger
        mapping: dict[tuple[int, int], int] = {}

        def hosts(idle: dict[int, int]) -> set[int]:
            mapping.update(plan(self.commands, idle))
            return set(mapping.values())

        with ledger.lock:
            taken = ledger.pool.discard(self._buffers.values(), choose=hosts)
            ledger.adopt(taken)
            self.commands = remap(self.commands, mapping, self._buffers)
            kept = set(mapping.values())
            unneeded = {value[0] for value in mapping} - kept
            for key in unneeded:
                del self._buffers[key]
            # a buffer holding a value from before the call is read again by every replay
            self._scratch = {key: size for key, size in taken.items()
                             if mapping.get((key, 0)) != key}
            # The others served only the recording (the pool lends a buffer to its own size
            # class alone): freed, not left idle beside the capture's (SD 1.5's step: 226 MiB).
            for buffer in ledger.pool.clear(only=unneeded):
                ledger.forget(buffer)

    def _upload(self, blob: bytearray, usage: int, label: str) -> GPUBuffer:
        dev = self.device
        buffer = dev.wgpu.create_buffer(label=label, size=max(len(blob), 4),
                                        usage=usage | wgpu.BufferUsage.COPY_DST)
        dev.buffers_created += 1
        dev.queue.write_buffer(buffer, 0, blob)
        return buffer

    # -- replay -----------------------------------------------------------------------
    def replay(self) -> None:
        """Record the captured work again into the current stream (no submit: reads,
        writes and synchronize() submit it, as for any recorded work)."""
        if self.open:
            raise CaptureError("replay() inside its own capture block: leave the `with` first")
        if self.lent:
            self.reclaim()
        if self.closed:
            raise CaptureError("this capture was released; capture the call again")
        replay_ops(self.device, self._ops)

    # -- lending the scratch between replays -------------------------------------------
    @property
    def scratch_bytes(self) -> int:
        """Bytes of the call's scratch: what `lend()` hands to the pool."""
        return sum(self._scratch.values())

    def lend(self) -> int:
        """Hand the call's scratch to the device's pool until `reclaim()` (or the next
        replay), so that other work (a VAE decode after the UNet's steps) may use it; the
        GPU runs that work after the replays already recorded. Returns the bytes lent.
        Only the scratch no other capture pins is lent (gpucore._residency)."""
        ledger = self._ledger
        if self.lent or self.closed or not self._pinned or not self._scratch:
            return 0
        with ledger.lock:
            if ledger.pool.idle_bytes + self.scratch_bytes > ledger.pool.limit:
                return 0  # the pool would drop some: keep them
            self.lent = True
            for key, size in list(self._scratch.items()):
                buffer = self._buffers[key]
                if not ledger.lend(self, buffer):
                    continue
                self._unpinned.add(key)
                if not ledger.give(buffer, size):  # filled meanwhile (another thread)
                    return 0
        return sum(self._scratch[key] for key in self._unpinned)

    def reclaim(self) -> bool:
        """Take the lent scratch back from the pool (pinned again). False when some of it is
        gone (kept by its new owner, or dropped by the pool): the capture is released then,
        and the call must be captured again. True when nothing was lent."""
        if not self.lent:
            return not self.closed
        with self._ledger.lock:
            self.lent = False
            self._unpinned -= self._ledger.reclaim(
                self, [self._buffers[key] for key in self._unpinned])
            if self._unpinned:
                self.release()
        return not self.closed

    def release(self) -> None:
        """Unpin the buffers and drop the recorded stream (also done when collected)."""
        if not self.closed:
            self.closed = True
            ledger = self._ledger
            if self._pinned:
                ledger.unpin(b for key, b in self._buffers.items() if key not in self._unpinned)
            ledger.unlend(self, self._unpinned)  # lent ones: the pool's (or their new owner's) now
            self._ops, self._keep, self._buffers = [], [], {}
            self._scratch, self._unpinned, self.lent = {}, set(), False

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # interpreter shutdown
            pass


def replay_ops(dev: CaptureHost, ops: list[tuple]) -> None:
    """Encode a finalized capture's ops into `dev`'s current stream."""
    with dev.ledger.lock:
        if dev.capturing is not None:
            raise CaptureError("replaying inside a capture is not supported: close the "
                               "capture first")
        stream = dev.current_stream
        profile = dev.profiling if stream is dev.default_stream else None
        compute = native = None
        due = stream.batch_size()
        for op in ops:
            if op[0] == "dispatch":
                if profile is not None:
                    dev.encode_dispatch(stream, op[1], op[2], op[3], op[4], op[5])
                    continue
                if compute is None:
                    compute = stream.open_pass()
                    native = native_pass_functions(compute)
                handles = op[6]
                if native is not None and handles is not None:
                    pass_ = compute._internal
                    native[0](pass_, handles[0])
                    native[1](pass_, 0, handles[1], handles[2], handles[3])
                    native[2](pass_, *op[4])
                else:
                    compute.set_pipeline(op[1])
                    compute.set_bind_group(0, op[2], op[3])
                    compute.dispatch_workgroups(*op[4])
                stream.pending += 1
                if stream.pending >= due:  # let the GPU start on the first part
                    stream.flush()
                    compute = None
                    due = stream.batch_size()
                continue
            compute = None
            stream.end_pass()
            encoder = stream.encoder_for_recording()
            if op[0] == "copy":
                encoder.copy_buffer_to_buffer(*op[1:])
            else:
                encoder.clear_buffer(op[1], 0, op[2])
            stream.pending += 1
