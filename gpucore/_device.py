"""Device: one wgpu device, its limits and features, and the batched command stream."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import wgpu
from wgpu.classes import (
    GPUBindGroup,
    GPUBindGroupLayout,
    GPUBuffer,
    GPUComputePipeline,
    GPUError,
)

from . import _gl
from ._adapters import OPTIONAL_FEATURES, AdapterInfo, choose_adapter
from ._bindings import BindGroupCache
from ._capture import Capture, CaptureError
from ._errors import DeviceLimitError, GpuError, lost_or_gpu_error
from ._kept import Kept
from ._limit import MemoryLimit
from ._pipelines import Pending, PipelineCache, builds_later, resolved
from ._pool import BufferPool, MemoryStats, exact_size, is_released, size_class
from ._profile import Profile
from ._residency import DROPPED_LIMIT, BufferLedger
from ._staging import STAGING_LIMIT, HostBytes, Staging
from ._stream import Event, Stream
from ._teardown import hold, release_dead

__all__ = ["Device", "Pipeline"]

# A compiled kernel as Device caches it: the pipeline and its bind group layout.
Pipeline = tuple[GPUComputePipeline, GPUBindGroupLayout]
T = TypeVar("T")

# Limits raised to the adapter's own values: the WebGPU defaults (128 MiB per storage
# binding, 256 MiB per buffer) are far too small for Stable Diffusion activations.
_RAISED_LIMITS = (
    "max-buffer-size", "max-storage-buffer-binding-size", "max-compute-workgroup-storage-size",
    "max-compute-invocations-per-workgroup", "max-compute-workgroup-size-x",
    "max-compute-workgroup-size-y", "max-compute-workgroup-size-z",
    "max-storage-buffers-per-shader-stage", "max-compute-workgroups-per-dimension")


class Device:
    """A wgpu device with the adapter's real limits and optional features.

    Dispatches are recorded into the current stream's command encoder and submitted in
    batches; reading a buffer back, writing one, or `synchronize()` submits what is pending
    on every stream. `capture()` records a call for replay; `stream(name)` and `Event` give
    independent submit batches and markers (ordering rules in gpucore._stream).
    """

    def __init__(self, info: AdapterInfo) -> None:
        release_dead(timeout=0.1)  # dead Devices' wgpu devices go here, not in a collection
        self.info = info
        self.features = frozenset(f for f in OPTIONAL_FEATURES if f in info.features)
        required: dict[str, int | None] = {
            k: info.limits[k] for k in _RAISED_LIMITS if k in info.limits}
        try:
            self.wgpu = info.adapter.request_device_sync(
                label=f"gpucore:{info.label}",
                required_features=sorted(self.features),
                required_limits=required,
            )
        except Exception as exc:  # wgpu raises plain errors here; say which adapter failed
            raise GpuError(f"could not open a device on adapter {info.label}: {exc}") from exc
        self.limits: dict[str, int] = dict(self.wgpu.limits)
        self.queue = self.wgpu.queue
        # OpenGL: one lock for every such Device, their wgpu objects released under it
        self._lock = _gl.register(self.wgpu) if info.backend == "gl" else threading.RLock()
        self._tls = threading.local()  # this thread's current stream
        self.pipelines: PipelineCache[Pipeline] = PipelineCache(
            self._lock, concurrent=info.backend != "gl")
        # a pipeline a dispatch needs is begun in the background (gpucore._pipelines)
        self.builds_later = builds_later(info.backend, info.type)
        self.bind_groups = BindGroupCache(self.wgpu)
        self.profiling: Profile | None = None  # the open Profile (it sets this)
        self.capturing: Capture | None = None  # the open Capture (it sets this, under the lock)
        self._fence: GPUBuffer | None = None
        self.pool = BufferPool()
        # which buffers captures pin, lend and hold (gpucore._residency)
        self.ledger = BufferLedger(self.pool, self._lock, self.bind_groups.evict)
        self.memory_limit = MemoryLimit(self.ledger)  # a cap on the pool's reserve (gpucore._limit)
        self.staging = Staging(self)  # read-backs and large uploads (gpucore._staging)
        # Creation counters: a warm forward pass or a replay should add to none of them.
        self.buffers_created = 0  # real allocations
        self._batches = itertools.count()  # numbers the streams' batches as they begin
        self.default_stream = self._new_stream("default")
        self._streams = [self.default_stream]
        self._kept = Kept(self._lock)  # a module dict keyed by the device would keep it alive
        # its wgpu device is released by release_dead() once this one is gone
        hold(self, self.wgpu, self._lock)

    # -- construction -----------------------------------------------------------------
    @classmethod
    def auto(cls) -> Device:
        """The best adapter present (honouring GPUCORE_BACKEND / GPUCORE_ADAPTER)."""
        return cls(choose_adapter())

    @classmethod
    def select(cls, backend: str | None = None, adapter: int | str | None = None) -> Device:
        """A device on an explicit backend and/or adapter (index or name substring)."""
        return cls(choose_adapter(backend=backend, adapter=adapter))

    def __repr__(self) -> str:
        return f"<Device {self.info.backend} {self.info.type} {self.info.name!r}>"

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def backend(self) -> str:
        return self.info.backend

    @property
    def has_f16(self) -> bool:
        return "shader-f16" in self.features

    @property
    def has_subgroups(self) -> bool:
        return "subgroup" in self.features

    @property
    def has_timestamps(self) -> bool:
        return "timestamp-query" in self.features

    def check_limit(self, limit: str, requested: int, what: str) -> None:
        """Raise DeviceLimitError when `requested` exceeds the device limit `limit`."""
        value = self.limits[limit]
        if requested > value:
            raise DeviceLimitError(limit, value, requested, what)

    # -- memory -----------------------------------------------------------------------
    def allocate(self, nbytes: int, usage: int, label: str,
                 exact: bool = False) -> tuple[GPUBuffer, int]:
        """A wgpu buffer of at least `nbytes`, from the pool when one is idle: of its size
        class, or with `exact` (a buffer kept for long: weights) of `nbytes` in 256-byte steps.

        Returns (buffer, allocated size); hand both back with `release`.
        """
        size = exact_size(nbytes) if exact else size_class(nbytes, self.limits["max-buffer-size"])
        # a kept value outlives a capture's lent scratch: never one of those (gpucore._kept)
        avoid = self.ledger.lent if self._kept.making else ()
        buffer = self.pool.take(size, avoid)
        if buffer is None:
            self.check_limit("max-buffer-size", size, f"{label} ({nbytes:,} bytes)")
            buffer = self.memory_limit.make_room(size, label, avoid)
        if buffer is None:
            if self.ledger.dropped > DROPPED_LIMIT and self.capturing is None:
                self.synchronize()  # the driver frees what the pool dropped once the GPU passed
            buffer = self.wgpu.create_buffer(label=label, size=size, usage=usage)
            self.buffers_created += 1
            self.pool.created(buffer, size)
        if (capture := self.capturing) is not None:
            capture.add_alloc(buffer)  # a new value: lets the capture share buffers
        return buffer, size

    def release(self, buffer: GPUBuffer, size: int) -> None:
        """Return a buffer to the pool (called when its Buffer is garbage collected).

        A buffer a capture replays into stays with the capture; one the pool has no room
        for is dropped, with the bind groups naming it, so its memory is freed."""
        if is_released(buffer):
            self.pool.dropped(buffer, size)
            return
        self.ledger.release(buffer, size)

    def keep(self, key: object, make: Callable[[], T]) -> T:
        """What ops keep per device under `key` (scratch buffers, constant tables): made by
        `make()` on first use, from no lent buffer, dropped with the device (gpucore._kept)."""
        return self._kept.get(key, make)

    def memory_stats(self) -> MemoryStats:
        """Bytes in live buffers, idle in the pool, and their peaks (gpucore.MemoryStats)."""
        return self.pool.stats()

    def reset_peak_memory(self) -> None:
        """Restart memory_stats()'s peaks now. torch: `reset_peak_memory_stats`."""
        self.pool.reset_peak()

    def empty_pool(self, nbytes: int | None = None) -> None:
        """Drop idle pooled buffers, at least `nbytes` of them, the largest first (None: every
        one), and the bind groups naming them (wgpu frees them)."""
        self.ledger.drop_idle(nbytes)  # an open capture's stay

    @property
    def bind_groups_created(self) -> int:
        """Bind groups made so far (cached dispatches and captures): a replay adds none."""
        return self.bind_groups.created

    # -- streams ----------------------------------------------------------------------
    @property
    def current_stream(self) -> Stream:
        """This thread's stream on this device (`with stream:` sets it; default otherwise)."""
        return getattr(self._tls, "stream", None) or self.default_stream

    def stream(self, name: str) -> Stream:
        """The stream called `name` on this device, made on first use. See gpucore._stream
        for what a stream is and is not (one wgpu queue underneath)."""
        with self._lock:
            for s in self._streams:
                if s.name == name:
                    return s
            made = self._new_stream(name)
            self._streams.append(made)
            return made

    def _new_stream(self, name: str) -> Stream:
        # the flush looked up at each call: a test counts submits by patching it
        return Stream(self, name, lock=self._lock, current=self._tls, batches=self._batches,
                      submit=lambda stream: self._flush_stream(stream))

    # -- command stream ---------------------------------------------------------------
    def record_dispatch(self, pipeline: GPUComputePipeline, layout: GPUBindGroupLayout,
                        buffers: list[tuple[GPUBuffer, int, int]], params: bytes | None,
                        workgroups: tuple[int, int, int], label: str) -> None:
        """Record one compute dispatch into the current stream's batch (no submit)."""
        with self._lock:
            if self.capturing is not None:
                self.capturing.add_dispatch(pipeline, layout, buffers, params, workgroups, label)
            stream = self.current_stream
            entries = tuple(buffers)
            offsets: list[int] = []
            if params is not None:
                if stream.params.full:
                    self._flush_stream(stream)
                offsets.append(stream.params.add(params))
                entries += ((stream.params.buffer, 0, len(params)),)
            group = self.bind_groups.get(layout, entries)
            self.encode_dispatch(stream, pipeline, group, offsets, workgroups, label)

    def encode_dispatch(self, stream: Stream, pipeline: GPUComputePipeline, group: GPUBindGroup,
                        offsets: Sequence[int], workgroups: tuple[int, int, int],
                        label: str) -> None:
        """Encode one dispatch of a bound group into `stream` (under the lock; a replay's
        dispatches come here while a profile times them)."""
        profile = self.profiling if stream is self.default_stream else None
        if profile is None and (stream.held or type(pipeline) is Pending):  # being built
            stream.hold((pipeline, group, offsets, workgroups))
            return
        if profile is not None:  # a pass of its own, to carry the timestamps
            stream.end_pass()
            pipeline = resolved(pipeline)
            compute = stream.encoder_for_recording().begin_compute_pass(
                label=label, timestamp_writes=profile.next_pass(label))
        else:
            # Dispatches share one pass: WebGPU orders them (each dispatch is its own
            # usage scope) and a pass per dispatch costs host time.
            compute = stream.compute or stream.open_pass()
        compute.set_pipeline(pipeline)
        compute.set_bind_group(0, group, offsets)
        compute.dispatch_workgroups(*workgroups)
        if profile is not None:
            compute.end()
        stream.pending += 1
        if (stream.pending >= stream.batch_size() or stream.overdue(time.perf_counter())
                or (profile and profile.full)):
            self._flush_stream(stream)  # the GPU starts on this part while Python records on

    def record_copy(self, src: GPUBuffer, src_offset: int, dst: GPUBuffer, dst_offset: int,
                    size: int) -> None:
        """Record a buffer-to-buffer copy into the current stream's batch."""
        with self._lock:
            if size:
                if self.capturing is not None:
                    self.capturing.add_copy(src, src_offset, dst, dst_offset, size)
                self.current_stream.copy(src, src_offset, dst, dst_offset, size)

    def record_clear(self, buffer: GPUBuffer, size: int) -> None:
        """Record a clear to zero of the first `size` bytes of `buffer`."""
        with self._lock:
            if self.capturing is not None:
                self.capturing.add_clear(buffer, size)
            self.current_stream.clear(buffer, size)

    def flush(self) -> None:
        """Submit everything recorded so far on every stream (does not wait for it)."""
        with self._lock:
            for stream in sorted(self._streams, key=lambda s: s.started):
                self._flush_stream(stream)

    def _waited(self) -> None:
        """The GPU has finished everything submitted: every stream's next batch starts small."""
        self.ledger.dropped = 0  # and the buffers dropped before are freed
        for stream in self._streams:
            stream.submits = 0

    def _flush_stream(self, stream: Stream) -> None:
        with self._lock:
            if stream.encoder is None:
                return
            stream.end_pass()
            encoder, stream.encoder, stream.pending = stream.encoder, None, 0
            profile = self.profiling if stream is self.default_stream else None
            if profile is not None:
                profile.resolve_into(encoder)
            try:
                stream.params.upload(self.queue)
                self.queue.submit([encoder.finish()])
            except GPUError as exc:
                raise lost_or_gpu_error(exc) from exc
            stream.submits = min(stream.submits + 1, 16)
            if profile is not None:
                profile.collect(self.queue)

    def synchronize(self) -> None:
        """Submit pending work (every stream) and block until the GPU has finished it (on a
        tiny read-back: wgpu-py 0.32's `on_submitted_work_done_sync` raises)."""
        with self._lock:
            self.flush()
            self.staging.held = 0  # wgpu frees the small writes' copies once their submit is done
            if self._fence is None:
                self._fence = self.wgpu.create_buffer(
                    size=4, usage=wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
                )
            try:
                self.staging.read(self._fence, 0, 4)
            except GPUError as exc:
                raise lost_or_gpu_error(exc) from exc
            self._waited()

    async def synchronize_async(self) -> None:
        """`await device.synchronize_async()`: like synchronize(), without blocking the
        asyncio event loop (awaits an Event recorded after every stream's work)."""
        with self._lock:
            self.flush()
            event = Event(self).record(self.default_stream)
        await event

    # -- capture and replay -----------------------------------------------------------
    def capture(self) -> Capture:
        """A context manager recording this device's command stream for replay; see
        gpucore._capture for the rules (gpustd.capture is the Tensor-level form)."""
        return Capture(self)

    # -- pipelines --------------------------------------------------------------------
    def pipeline(self, key: tuple, build: Callable[[], Pipeline]) -> Pipeline:
        """The compiled pipeline for `key`, built once by `build()` (by whichever thread asks
        first; gpucore._pipelines) and cached."""
        return self.pipelines.get(key, build)

    @property
    def pipelines_created(self) -> int:
        """Pipelines built so far: a warm forward pass or a replay adds none."""
        return self.pipelines.created

    # -- profiling --------------------------------------------------------------------
    def profile(self) -> Profile:
        """Context manager: per-dispatch GPU times from timestamp queries (default stream).

        >>> with device.profile() as prof:
        ...     kernel.dispatch(...)
        >>> print(prof.table())
        """
        return Profile(self)

    def read_bytes(self, buffer: GPUBuffer, offset: int, size: int,
                   out: np.ndarray | None = None) -> memoryview:
        """Submit pending work (every stream), then copy `size` bytes of `buffer` back, into
        `out` when given (a contiguous array of `size` bytes), through the staging ring."""
        with self._lock:
            if self.capturing is not None:
                raise CaptureError(
                    "a read-back inside a capture: a replay cannot repeat host logic that "
                    "uses the value. Keep the value on the device, or read it after the "
                    "captured call (outside `with device.capture()` / gpustd.capture's fn)")
            self.flush()
            try:
                data = self.staging.read(buffer, offset, size, out)
            except GPUError as exc:
                raise lost_or_gpu_error(exc) from exc
            self._waited()  # the read was submitted last: the work before it is done
            return data

    def write_bytes(self, buffer: GPUBuffer, offset: int, data: HostBytes) -> None:
        """Write host bytes into `buffer`, ordered after everything recorded so far (on every
        stream). Inside a capture the bytes become a constant the replay writes again."""
        with self._lock:
            if self.capturing is not None:
                self.capturing.add_write(
                    buffer, offset, data if isinstance(data, bytes) else data.tobytes())
            stream = self.current_stream
            if (stream.held and all(s is stream or s.encoder is None for s in self._streams)
                    and stream.held_write(buffer, offset, data)):
                return
            self.flush()
            self.staging.write(buffer, offset, data)
            if self.staging.held > STAGING_LIMIT and self.capturing is None:
                self.synchronize()  # else wgpu keeps every small write's copy until a submit
