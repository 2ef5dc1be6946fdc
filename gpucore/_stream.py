"""Streams (independent submit batches) and events (markers in the queue, polled or awaited).

Ordering rules, honestly: a wgpu device has ONE queue. Everything submitted runs in
submission order as far as results are concerned; a stream is not a second hardware queue.
What a stream gives is its own command encoder, params arena and submit batch: work recorded
on stream A is submitted when A flushes (`A.flush()`, an event recorded on A, or A's batch
filling up), whatever B has pending, and a thread can record on its stream while another
records on its own. Whether the GPU overlaps two streams' submits is up to the driver; do not
count on it.

- A blocking read (`Buffer.read`), a host write (`Buffer.write`) and `Device.synchronize()`
  submit every stream's pending work first (oldest pending batch first): they see everything
  recorded before them, on any stream.
- Work recorded on two streams without an event between them is unordered, exactly as
  recorded-but-unsubmitted work can be submitted in either order. To order B after A:
  `event = A.record_event(); B.wait_event(event)` (A's work up to the event is then submitted
  before anything B records afterwards).
- `Event.wait()` blocks until the GPU has finished everything submitted before the event;
  `Event.is_complete()` polls and never blocks; `await event` waits without blocking the
  event loop.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Generator, Hashable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

import numpy as np
import wgpu
from wgpu.classes import (
    GPUBuffer,
    GPUCommandEncoder,
    GPUComputePassEncoder,
    GPUDevice,
    GPUPromise,
    GPUQuerySet,
    GPUQueue,
)

from . import _runtime
from ._adapters import AdapterInfo
from ._bindings import ParamsArena
from ._errors import GpuError
from ._pipelines import resolved
from ._staging import Fill, HostBytes

__all__ = ["Event", "Stream", "StreamHost"]

T = TypeVar("T")

_MAP = wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST
# Dispatches per submit on a real GPU: enough to amortize a submit, few enough that the GPU
# starts while Python records the rest. A CPU adapter (lavapipe) runs on the recording
# cores anyway, so there a stream submits only when something needs the results.
SUBMIT_EVERY = 256
# After a wait (a read-back, synchronize) the GPU is idle: the first submit then takes this
# many dispatches and each next one twice as many, up to SUBMIT_EVERY, so that the GPU starts
# after ~0.5 ms of recording rather than 256 dispatches' worth (a txt2img step reads its
# result back, then replays ~560 dispatches at ~15 us of Python each: 4 ms of idle GPU a step).
# 8 rather than 32: a replay encodes ~6 us a dispatch, so its GPU starts ~0.15 ms sooner, and
# the two more submits a step (~0.25 ms of host each) run while the GPU works.
FIRST_SUBMIT = 8
# ... or after this much host time of recording, doubling likewise up to SUBMIT_AFTER_MAX_S,
# whichever comes first: eager ops take ~100-150 us of Python each where a replay takes ~7, so
# counts alone kept the GPU waiting (the SD VAE decode's 107 eager dispatches: 32 recorded in
# ~5 ms before the first submit, then 64 more, 35.6 ms wall for 25.5 ms of kernels on an H200).
FIRST_SUBMIT_S = 0.0005
SUBMIT_AFTER_MAX_S = 0.004
# A host write recorded while dispatches wait for their pipelines is held as a copy up to this
# size (a small constant an op makes mid-picture); a larger one submits the batch instead.
HELD_WRITE_MAX = 1 << 20


class StreamHost(Protocol):
    """What streams and events need of their device (a gpucore.Device)."""

    info: AdapterInfo
    wgpu: GPUDevice
    queue: GPUQueue
    limits: dict[str, int]

    @property
    def name(self) -> str: ...

    @property
    def has_timestamps(self) -> bool: ...

    @property
    def current_stream(self) -> Stream: ...

    @property
    def capturing(self) -> object | None: ...  # the open Capture, if any

    def keep(self, key: Hashable, make: Callable[[], T]) -> T: ...


def _timing_queries(dev: StreamHost) -> tuple[GPUQuerySet, GPUBuffer]:
    """The device's one timestamp query set and resolve buffer for timed events (made once)."""
    return dev.keep(("gpucore._stream", "timing queries"), lambda: (
        dev.wgpu.create_query_set(type="timestamp", count=1),
        dev.wgpu.create_buffer(size=8, usage=wgpu.BufferUsage.QUERY_RESOLVE
                               | wgpu.BufferUsage.COPY_SRC)))


class Stream:
    """A named sequence of GPU work with its own encoder and submit batch.

    `with stream:` makes it the current stream of this thread on its device: dispatches,
    copies and clears recorded in the block go to it. numpy has no equivalent; CUDA's is
    `torch.cuda.Stream` (but see the module docstring: one wgpu queue underneath).

    Its device makes it (`Device.stream(name)`) and hands it the device's `lock`, the
    thread-local `current` slot that `with stream:` sets, the device-wide `batches` count
    that orders the streams' flushes, and `submit`, which submits a stream's batch.
    """

    def __init__(self, device: StreamHost, name: str, *, lock: AbstractContextManager[Any],
                 current: threading.local, batches: Iterator[int],
                 submit: Callable[[Stream], None]) -> None:
        self.device = device
        self.name = name
        self.lock = lock  # the device's: recording and submits
        self._current = current
        self._batches = batches
        self._submit = submit
        self.encoder: GPUCommandEncoder | None = None
        self.started = 0  # when the pending batch began (device-wide count): flush order
        # the open compute pass of the batch being recorded
        self.compute: GPUComputePassEncoder | None = None
        # commands held behind a dispatch whose pipeline is still being built, in order
        # (hold(); gpucore._pipelines): encoded when the pass ends or is needed at once
        self.held: list[tuple] = []
        self.pending = 0
        real_gpu = device.info.type != "cpu"
        self.submit_every = SUBMIT_EVERY if real_gpu else 1 << 62
        self.first_submit = FIRST_SUBMIT if real_gpu else 1 << 62
        self.first_submit_s = FIRST_SUBMIT_S if real_gpu else math.inf
        self.submit_after_max_s = SUBMIT_AFTER_MAX_S if real_gpu else math.inf
        self.submits = 0  # since the device last waited (batch_size)
        self.opened = 0.0  # perf_counter when the pending batch began (overdue)
        self.params = ParamsArena(
            device.wgpu, device.limits.get("min-uniform-buffer-offset-alignment", 256))
        self._outer: list[Stream | None] = []

    def __repr__(self) -> str:
        return f"<Stream {self.name!r} on {self.device.name!r}, {self.pending} pending>"

    def __enter__(self) -> Stream:
        self._outer.append(getattr(self._current, "stream", None))
        self._current.stream = self
        return self

    def __exit__(self, *exc: object) -> None:
        self._current.stream = self._outer.pop()

    # -- recording (called by Device under its lock) ----------------------------------
    def encoder_for_recording(self) -> GPUCommandEncoder:
        if self.encoder is None:
            self.encoder = self.device.wgpu.create_command_encoder(label=f"gpucore {self.name}")
            self.started = next(self._batches)
            self.opened = time.perf_counter()
        return self.encoder

    def batch_size(self) -> int:
        """Dispatches the next submit takes: first_submit, doubling with each submit since
        the device last waited, up to submit_every."""
        return min(self.submit_every, self.first_submit << self.submits)

    def overdue(self, now: float) -> bool:
        """Whether the pending batch has been recorded for longer than this submit's share of
        host time: first_submit_s, doubling like batch_size, up to submit_after_max_s."""
        budget = min(self.submit_after_max_s, self.first_submit_s * (1 << self.submits))
        return now - self.opened >= budget

    def open_pass(self) -> GPUComputePassEncoder:
        """The batch's shared compute pass (WebGPU orders dispatches within it), the held
        commands encoded first."""
        if self.held:
            self._encode_held()
        if self.compute is None:
            self.compute = self.encoder_for_recording().begin_compute_pass(label=self.name)
        return self.compute

    def end_pass(self) -> None:
        if self.held:
            self._encode_held()
        if self.compute is not None:
            self.compute.end()
            self.compute = None

    # -- held commands: while a dispatch waits for its pipeline (gpucore._pipelines), what
    # is recorded after it waits too, in order, until the batch has to be encoded
    def hold(self, command: tuple) -> None:
        """Keep `command` (a dispatch: (pipeline or Pending, group, offsets, workgroups);
        ("copy", src, src_offset, dst, dst_offset, size); ("clear", buffer, size)) until
        the batch is encoded: the pass ends for a dispatch that cannot wait, or a submit."""
        self.encoder_for_recording()
        self.held.append(command)
        self.pending += 1

    def copy(self, src: GPUBuffer, src_offset: int, dst: GPUBuffer, dst_offset: int,
             size: int) -> None:
        """Record a buffer-to-buffer copy (held behind held dispatches)."""
        if self.held:
            self.hold(("copy", src, src_offset, dst, dst_offset, size))
            return
        self.end_pass()
        self.encoder_for_recording().copy_buffer_to_buffer(src, src_offset, dst, dst_offset,
                                                           size)
        self.pending += 1

    def clear(self, buffer: GPUBuffer, size: int) -> None:
        """Record a clear to zero of the first `size` bytes of `buffer` (held likewise)."""
        if self.held:
            self.hold(("clear", buffer, size))
            return
        self.end_pass()
        self.encoder_for_recording().clear_buffer(buffer, 0, size)
        self.pending += 1

    def held_write(self, buffer: GPUBuffer, offset: int, data: HostBytes) -> bool:
        """Hold a host write behind held dispatches, as a copy from a buffer of its own
        (False where nothing is held, or the write is large or odd: the caller then submits
        them first, as always)."""
        size = len(data) if isinstance(data, bytes) else data.nbytes
        if not self.held or size > HELD_WRITE_MAX or offset % 4 or size % 4 or not size:
            return False
        raw = (data if isinstance(data, bytes) else data.tobytes() if isinstance(data, Fill)
               else np.ascontiguousarray(data).tobytes())
        source = self.device.wgpu.create_buffer_with_data(data=raw,
                                                          usage=wgpu.BufferUsage.COPY_SRC)
        self.hold(("copy", source, 0, buffer, offset, size))
        return True

    def _encode_held(self) -> None:
        held, self.held = self.held, []  # a build's error drops the rest of the batch
        for command in held:
            kind = command[0]
            if type(kind) is str:
                if self.compute is not None:
                    self.compute.end()
                    self.compute = None
                encoder = self.encoder_for_recording()
                if kind == "copy":
                    encoder.copy_buffer_to_buffer(*command[1:])
                else:
                    encoder.clear_buffer(command[1], 0, command[2])
                continue
            if self.compute is None:
                self.compute = self.encoder_for_recording().begin_compute_pass(label=self.name)
            self.compute.set_pipeline(resolved(kind))
            self.compute.set_bind_group(0, command[1], command[2])
            self.compute.dispatch_workgroups(*command[3])

    def flush(self) -> None:
        """Submit this stream's recorded work (does not wait, leaves other streams alone)."""
        self._submit(self)

    # -- events -----------------------------------------------------------------------
    def record_event(self, *, timing: bool = False) -> Event:
        """Submit this stream's work and return an Event that completes after it."""
        event = Event(self.device, timing=timing)
        event.record(self)
        return event

    def wait_event(self, event: Event) -> None:
        """Order work recorded on this stream from now on after `event`.

        The event's work is already submitted (recording it submitted it) and the queue runs
        submits in order, so nothing needs to wait on the host: this only checks the event
        was recorded on the same device.
        """
        if event.device is not self.device:
            raise GpuError("wait_event needs an event of the same device; for another device "
                           "call event.wait() on the host (devices share no queue)")
        if event._promise is None:
            raise GpuError("wait_event on an event never recorded: call event.record() first")

    def synchronize(self) -> None:
        """Submit this stream's work and block until the GPU has finished it."""
        self.record_event().wait()


class Event:
    """A marker in a device's queue: complete once the GPU has done everything submitted
    before it. `timing=True` (needs 'timestamp-query') also stamps the GPU clock, for
    `elapsed_ms`. CUDA's equivalent: `torch.cuda.Event(enable_timing=...)`."""

    def __init__(self, device: StreamHost, *, timing: bool = False) -> None:
        if timing and not device.has_timestamps:
            raise GpuError(
                f"adapter {device.info.label} has no 'timestamp-query' feature, so events "
                "cannot be timed; use Event(device) and time on the host (time.perf_counter "
                "around event.wait()) instead")
        self.device = device
        self.timing = timing
        self._staging: GPUBuffer | None = None
        self._promise: GPUPromise[None] | None = None
        self._stamp: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = ("unrecorded" if self._promise is None
                 else "complete" if self.is_complete() else "pending")
        return f"<Event {state} on {self.device.name!r}>"

    def record(self, stream: Stream | None = None) -> Event:
        """Submit `stream`'s pending work (default: this thread's current stream), then
        put the marker after it. Recording again moves the marker. Returns self."""
        dev = self.device
        stream = stream or dev.current_stream
        if stream.device is not dev:
            raise GpuError(f"an Event of {dev.info.label} cannot be recorded on a stream of "
                           f"{stream.device.info.label} (devices share no queue): make the "
                           "event with Event(stream.device) or stream.record_event()")
        if dev.capturing is not None:
            raise GpuError("an event cannot be recorded inside a capture (replays do not "
                           "repeat host-side markers); record it before or after")
        with stream.lock:
            stream.flush()
            encoder = dev.wgpu.create_command_encoder(label="gpucore event")
            staging = dev.wgpu.create_buffer(label="gpucore event", size=8, usage=_MAP)
            if self.timing:
                query_set, resolve = _timing_queries(dev)
                # The end-of-pass stamp of an empty pass is written once all earlier work
                # in the queue is done (Vulkan: bottom-of-pipe), so it marks completion.
                encoder.begin_compute_pass(timestamp_writes={
                    "query_set": query_set, "end_of_pass_write_index": 0}).end()
                encoder.resolve_query_set(query_set, 0, 1, resolve, 0)
                encoder.copy_buffer_to_buffer(resolve, 0, staging, 0, 8)
            else:  # any command touching the staging buffer makes the map wait for it
                encoder.clear_buffer(staging, 0, 8)
            dev.queue.submit([encoder.finish()])
            with self._lock:
                self._staging, self._stamp = staging, None
                self._promise = staging.map_async(wgpu.MapMode.READ)
        return self

    def _recorded(self) -> GPUPromise[None]:
        if self._promise is None:
            raise GpuError("this event was never recorded: call event.record(stream) first")
        return self._promise

    def is_complete(self) -> bool:
        """Whether the GPU has finished the work before the event (never blocks)."""
        promise = self._recorded()
        runtime = _runtime.load(self.device.info.runtime)
        if runtime is not None:
            runtime.process_events()  # Dawn delivers the map callback only when asked
        # The promise's threading.Event is set when the map callback fires (from wgpu-py's
        # poll thread on wgpu-native, inside process_events on Dawn); a promise without it
        # (another wgpu-py backend) is asked through the buffer's state.
        done = getattr(promise, "_thread_event", None)
        if done is not None:
            return bool(done.is_set())
        return self._staging is None or self._staging.map_state != "pending"

    def wait(self) -> None:
        """Block until the GPU has finished everything submitted before the event."""
        self._finish(self._recorded().sync_wait)

    def __await__(self) -> Generator[Any, None, None]:
        """`await event`: wait without blocking the asyncio event loop."""
        promise = self._recorded()

        async def waiter() -> None:
            await promise
            self._finish(lambda: None)

        return waiter().__await__()

    def _finish(self, wait: Callable[[], object]) -> None:
        wait()
        with self._lock:
            if self._staging is not None:
                if self.timing:
                    self._stamp = int(np.frombuffer(self._staging.read_mapped(), np.uint64)[0])
                self._staging.unmap()
                self._staging = None

    def elapsed_ms(self, end: Event) -> float:
        """GPU milliseconds from this event to `end` (both recorded with timing=True; waits
        for both). CUDA: `start.elapsed_time(end)`."""
        for e in (self, end):
            if not e.timing:
                raise GpuError("elapsed_ms needs both events made with timing=True")
            e.wait()
        assert self._stamp is not None and end._stamp is not None
        return (end._stamp - self._stamp) / 1e6  # wgpu reports timestamps in nanoseconds
