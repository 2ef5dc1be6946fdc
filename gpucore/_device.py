"""Device: one wgpu device, its limits and features, and the batched command stream."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np
import wgpu

from ._adapters import OPTIONAL_FEATURES, AdapterInfo, choose_adapter
from ._errors import DeviceLimitError, DeviceLostError, GpuError
from ._profile import Profile

if TYPE_CHECKING:
    pass

__all__ = ["Device", "default_device", "synchronize"]

# Limits raised to the adapter's own values: the WebGPU defaults (128 MiB per storage
# binding, 256 MiB per buffer) are far too small for Stable Diffusion activations.
_RAISED_LIMITS = (
    "max-buffer-size",
    "max-storage-buffer-binding-size",
    "max-compute-workgroup-storage-size",
    "max-compute-invocations-per-workgroup",
    "max-compute-workgroup-size-x",
    "max-compute-workgroup-size-y",
    "max-compute-workgroup-size-z",
    "max-storage-buffers-per-shader-stage",
    "max-compute-workgroups-per-dimension",
)
_PARAM_SLOTS = 4096  # params slots per batch; a batch that needs more is submitted early
_BIND_GROUP_CACHE = 8192
# Dispatches per submit on a real GPU: enough to amortize a submit, few enough that the GPU
# starts while Python records the rest. A CPU adapter (lavapipe) runs on the recording
# cores anyway, so there it submits only when something needs the results.
_SUBMIT_EVERY = 256


def _handle_lost(exc: Exception) -> GpuError:
    text = str(exc)
    if "lost" in text.lower():
        return DeviceLostError(f"the GPU device was lost ({text.splitlines()[0]}); "
                               "create a new Device (check the driver and GPU memory)")
    return GpuError(text)


class Device:
    """A wgpu device with the adapter's real limits and optional features.

    Dispatches are recorded into one command encoder and submitted in batches; reading a
    buffer back, writing one, or `synchronize()` submits what is pending.
    """

    def __init__(self, info: AdapterInfo) -> None:
        self.info = info
        self.features = frozenset(f for f in OPTIONAL_FEATURES if f in info.features)
        required = {k: info.limits[k] for k in _RAISED_LIMITS if k in info.limits}
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
        self._lock = threading.RLock()
        self._encoder: Any = None
        self._pass: Any = None  # the open compute pass of the batch being recorded
        self._submit_every = _SUBMIT_EVERY if info.type != "cpu" else 1 << 62
        self._pending = 0
        self._pipelines: dict[tuple, Any] = {}
        self._bind_groups: OrderedDict[tuple, Any] = OrderedDict()
        align = max(self.limits.get("min-uniform-buffer-offset-alignment", 256), 16)
        self._param_stride = max(align, 256)
        self._params = self.wgpu.create_buffer(
            label="gpucore params",
            size=self._param_stride * _PARAM_SLOTS,
            usage=wgpu.BufferUsage.UNIFORM | wgpu.BufferUsage.COPY_DST,
        )
        self._param_bytes = bytearray(self._param_stride * _PARAM_SLOTS)
        self._param_used = 0
        self._profile: Profile | None = None
        self._free: dict[int, list[Any]] = {}  # size class -> idle wgpu buffers
        self.pool_bytes = 0  # bytes held idle in the pool
        self.pool_limit = 4 << 30
        self.buffers_created = 0  # real allocations: a warm forward pass should add none

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
    @staticmethod
    def size_class(nbytes: int) -> int:
        """Allocation size for a request: 256-byte steps up to 64 KiB, then 8 steps per
        power of two (at most 12.5% slack), so freed activations fit later requests."""
        if nbytes <= 65536:
            return max(256, -(-nbytes // 256) * 256)
        step = 1 << (nbytes.bit_length() - 4)
        return -(-nbytes // step) * step

    def allocate(self, nbytes: int, usage: int, label: str) -> tuple[Any, int]:
        """A wgpu buffer of at least `nbytes`, reused from the pool when one is idle.

        Reuse is safe without waiting: the GPU executes the queue in order, so work recorded
        for a buffer's new owner runs after the old owner's. Returns (buffer, size class).
        """
        cls = self.size_class(nbytes)
        with self._lock:
            idle = self._free.get(cls)
            if idle:
                self.pool_bytes -= cls
                return idle.pop(), cls
        self.check_limit("max-buffer-size", cls, f"{label} ({nbytes:,} bytes)")
        self.buffers_created += 1
        return self.wgpu.create_buffer(label=label, size=cls, usage=usage), cls

    def release(self, buffer: Any, size_class: int) -> None:
        """Return a buffer to the pool (called when its Buffer is garbage collected)."""
        with self._lock:
            if self.pool_bytes + size_class <= self.pool_limit:
                self._free.setdefault(size_class, []).append(buffer)
                self.pool_bytes += size_class

    def empty_pool(self) -> None:
        """Drop every idle pooled buffer (wgpu frees them)."""
        with self._lock:
            self._free.clear()
            self.pool_bytes = 0

    # -- command stream ---------------------------------------------------------------
    def _encoder_for_recording(self) -> Any:
        if self._encoder is None:
            self._encoder = self.wgpu.create_command_encoder(label="gpucore batch")
        return self._encoder

    def _param_slot(self, data: bytes) -> int:
        """Reserve a params slot in this batch; returns its byte offset."""
        if self._param_used == _PARAM_SLOTS:
            self.flush()
        offset = self._param_used * self._param_stride
        self._param_bytes[offset : offset + len(data)] = data
        self._param_used += 1
        return offset

    def bind_group(self, layout: Any, entries: tuple[tuple[Any, int, int], ...]) -> Any:
        """A (cached) bind group of `(wgpu buffer, offset, size)` entries in binding order."""
        key = (id(layout), *tuple((id(b), o, s) for b, o, s in entries))
        group = self._bind_groups.get(key)
        if group is not None:
            self._bind_groups.move_to_end(key)
            return group[0]
        resources = [
            {"binding": i, "resource": {"buffer": b, "offset": o, "size": s}}
            for i, (b, o, s) in enumerate(entries)
        ]
        group = self.wgpu.create_bind_group(layout=layout, entries=resources)
        # Keep the buffers alive with the group so their ids cannot be reused by others.
        self._bind_groups[key] = (group, layout, [b for b, _, _ in entries])
        if len(self._bind_groups) > _BIND_GROUP_CACHE:
            self._bind_groups.popitem(last=False)
        return group

    def record_dispatch(
        self,
        pipeline: Any,
        layout: Any,
        buffers: list[tuple[Any, int, int]],
        params: bytes | None,
        workgroups: tuple[int, int, int],
        label: str,
    ) -> None:
        """Record one compute dispatch into the current batch (no submit)."""
        with self._lock:
            entries = list(buffers)
            offsets: list[int] = []
            if params is not None:
                offsets.append(self._param_slot(params))
                entries.append((self._params, 0, len(params)))
            group = self.bind_group(layout, tuple(entries))
            if self._profile is not None:  # a pass of its own, to carry the timestamps
                self._end_pass()
                compute = self._encoder_for_recording().begin_compute_pass(
                    label=label, timestamp_writes=self._profile.next_pass(label))
            else:
                # Dispatches share one pass: WebGPU orders them (each dispatch is its own
                # usage scope) and a pass per dispatch costs host time.
                if self._pass is None:
                    self._pass = self._encoder_for_recording().begin_compute_pass(
                        label="gpucore batch")
                compute = self._pass
            compute.set_pipeline(pipeline)
            compute.set_bind_group(0, group, offsets)
            compute.dispatch_workgroups(*workgroups)
            if self._profile is not None:
                compute.end()
            self._pending += 1
            if self._pending >= self._submit_every or (self._profile and self._profile.full):
                self.flush()  # the GPU starts on this part while Python records the next

    def _end_pass(self) -> None:
        if self._pass is not None:
            self._pass.end()
            self._pass = None

    def record_copy(self, src: Any, src_offset: int, dst: Any, dst_offset: int, size: int) -> None:
        with self._lock:
            if size:
                self._end_pass()
                self._encoder_for_recording().copy_buffer_to_buffer(
                    src, src_offset, dst, dst_offset, size
                )
                self._pending += 1

    def record_clear(self, buffer: Any, size: int) -> None:
        with self._lock:
            self._end_pass()
            self._encoder_for_recording().clear_buffer(buffer, 0, size)
            self._pending += 1

    def flush(self) -> None:
        """Submit everything recorded so far (does not wait for it)."""
        with self._lock:
            if self._encoder is None:
                return
            self._end_pass()
            encoder, self._encoder, self._pending = self._encoder, None, 0
            profile = self._profile
            if profile is not None:
                profile.resolve_into(encoder)
            try:
                if self._param_used:
                    used = self._param_used * self._param_stride
                    self.queue.write_buffer(self._params, 0, memoryview(self._param_bytes)[:used])
                    self._param_used = 0
                self.queue.submit([encoder.finish()])
            except wgpu.GPUError as exc:
                raise _handle_lost(exc) from exc
            if profile is not None:
                profile.collect(self.queue)

    def synchronize(self) -> None:
        """Submit pending work and block until the GPU has finished all of it.

        wgpu-py 0.32's `on_submitted_work_done_sync` raises, so we wait on a tiny mapped
        read-back, which completes only after all earlier submissions.
        """
        with self._lock:
            self.flush()
            if not hasattr(self, "_fence"):
                self._fence = self.wgpu.create_buffer(
                    size=4, usage=wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
                )
            try:
                self.queue.read_buffer(self._fence)
            except wgpu.GPUError as exc:
                raise _handle_lost(exc) from exc

    # -- pipelines --------------------------------------------------------------------
    def pipeline(self, key: tuple, build: Any) -> Any:
        """The compiled pipeline for `key`, built once by `build()` and cached."""
        with self._lock:
            found = self._pipelines.get(key)
            if found is None:
                found = self._pipelines[key] = build()
            return found

    # -- profiling --------------------------------------------------------------------
    def profile(self) -> Profile:
        """Context manager: per-dispatch GPU times from timestamp queries.

        >>> with device.profile() as prof:
        ...     kernel.dispatch(...)
        >>> print(prof.table())
        """
        return Profile(self)

    def _start_profile(self, profile: Profile) -> None:
        if not self.has_timestamps:
            raise GpuError(
                f"adapter {self.info.label} has no 'timestamp-query' feature; "
                "profile on an adapter that has it (time with synchronize() otherwise)"
            )
        self.flush()
        self._profile = profile

    def _stop_profile(self) -> None:
        self.flush()
        self._profile = None

    def read_bytes(self, buffer: Any, offset: int, size: int) -> memoryview:
        """Submit pending work, then copy `size` bytes of `buffer` back to the host."""
        with self._lock:
            self.flush()
            try:
                return self.queue.read_buffer(buffer, offset, size)
            except wgpu.GPUError as exc:
                raise _handle_lost(exc) from exc

    def write_bytes(self, buffer: Any, offset: int, data: np.ndarray | bytes) -> None:
        """Write host bytes into `buffer`, ordered after everything recorded so far."""
        with self._lock:
            self.flush()
            self.queue.write_buffer(buffer, offset, data)


_default: Device | None = None
_default_lock = threading.Lock()


def default_device() -> Device:
    """The process-wide default device (`Device.auto()`, created on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Device.auto()
        return _default


def synchronize(device: Device | None = None) -> None:
    """Wait for all GPU work on `device` (default device if None)."""
    (device or default_device()).synchronize()
