"""Device: one wgpu device, its limits and features, and the batched command stream."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import wgpu

from ._adapters import OPTIONAL_FEATURES, AdapterInfo, choose_adapter
from ._bindings import BindGroupCache, ParamsArena
from ._errors import DeviceLimitError, DeviceLostError, GpuError
from ._pool import BufferPool, size_class
from ._profile import Profile

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
        self._bind_groups = BindGroupCache(self.wgpu)
        self._params = ParamsArena(
            self.wgpu, self.limits.get("min-uniform-buffer-offset-alignment", 256))
        self._profile: Profile | None = None
        self.pool = BufferPool()
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
    def allocate(self, nbytes: int, usage: int, label: str) -> tuple[Any, int]:
        """A wgpu buffer of at least `nbytes`, from the pool when one is idle.

        Returns (buffer, allocated size); hand both back with `release`.
        """
        size = size_class(nbytes, self.limits["max-buffer-size"])
        while (found := self.pool.take(size)) is not None:
            if not _released(found):
                return found, size
        self.check_limit("max-buffer-size", size, f"{label} ({nbytes:,} bytes)")
        self.buffers_created += 1
        return self.wgpu.create_buffer(label=label, size=size, usage=usage), size

    def release(self, buffer: Any, size: int) -> None:
        """Return a buffer to the pool (called when its Buffer is garbage collected)."""
        if not _released(buffer):
            self.pool.give(buffer, size)

    def empty_pool(self) -> None:
        """Drop every idle pooled buffer (wgpu frees them)."""
        self.pool.clear()

    # -- command stream ---------------------------------------------------------------
    def _encoder_for_recording(self) -> Any:
        if self._encoder is None:
            self._encoder = self.wgpu.create_command_encoder(label="gpucore batch")
        return self._encoder

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
                if self._params.full:
                    self.flush()
                offsets.append(self._params.add(params))
                entries.append((self._params.buffer, 0, len(params)))
            group = self._bind_groups.get(layout, tuple(entries))
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
                self._params.upload(self.queue)
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


def _released(buffer: Any) -> bool:
    """Whether wgpu already freed `buffer`. A Buffer collected in a reference cycle has its
    wgpu buffer's finalizer run in the same collection, before or after its own `__del__`
    pooled it: such a buffer must be dropped, not handed out again."""
    return getattr(buffer, "_internal", True) is None
