"""Per-dispatch GPU timing from timestamp queries."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Protocol

import numpy as np
import wgpu
from wgpu.classes import GPUBuffer, GPUCommandEncoder, GPUDevice, GPUQuerySet, GPUQueue

from ._adapters import AdapterInfo
from ._errors import GpuError

__all__ = ["Profile", "ProfileHost"]

_QUERIES = 4096  # two per dispatch; the batch is submitted when the set is full


class ProfileHost(Protocol):
    """What a profile needs of its device (a gpucore.Device)."""

    info: AdapterInfo
    wgpu: GPUDevice
    profiling: Profile | None  # the open profile: the device times its dispatches into it

    @property
    def has_timestamps(self) -> bool: ...

    def flush(self) -> None: ...


class Profile:
    """Collects (kernel label, GPU nanoseconds) for every dispatch while active."""

    def __init__(self, device: ProfileHost) -> None:
        self.device = device
        self.records: list[tuple[str, float]] = []
        self._labels: list[str] = []
        self._query_set: GPUQuerySet | None = None
        self._resolve: GPUBuffer | None = None

    def __enter__(self) -> Profile:
        device = self.device
        if not device.has_timestamps:
            raise GpuError(
                f"adapter {device.info.label} has no 'timestamp-query' feature; "
                "profile on an adapter that has it (time with synchronize() otherwise)"
            )
        device.flush()  # work recorded before the profile is not timed in it
        device.profiling = self
        self._query_set = device.wgpu.create_query_set(type="timestamp", count=_QUERIES)
        self._resolve = device.wgpu.create_buffer(
            size=_QUERIES * 8,
            usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.device.flush()
        self.device.profiling = None

    @property
    def full(self) -> bool:
        return 2 * len(self._labels) >= _QUERIES

    def next_pass(self, label: str) -> dict[str, Any]:
        i = 2 * len(self._labels)
        self._labels.append(label)
        return {
            "query_set": self._query_set,
            "beginning_of_pass_write_index": i,
            "end_of_pass_write_index": i + 1,
        }

    def _sets(self) -> tuple[GPUQuerySet, GPUBuffer]:
        # Labels exist only between __enter__ (which makes both) and the last collect.
        assert self._query_set is not None and self._resolve is not None
        return self._query_set, self._resolve

    def resolve_into(self, encoder: GPUCommandEncoder) -> None:
        if self._labels:
            query_set, resolve = self._sets()
            encoder.resolve_query_set(query_set, 0, 2 * len(self._labels), resolve, 0)

    def collect(self, queue: GPUQueue) -> None:
        if not self._labels:
            return
        raw = queue.read_buffer(self._sets()[1], 0, 16 * len(self._labels))
        stamps = np.frombuffer(raw, dtype=np.uint64).reshape(-1, 2).astype(np.int64)
        # wgpu reports timestamps in nanoseconds.
        durations = np.maximum(stamps[:, 1] - stamps[:, 0], 0)
        self.records.extend(zip(self._labels, durations.astype(float)))
        self._labels = []

    def total_ns(self, label: str | None = None) -> float:
        return float(sum(ns for name, ns in self.records if label in (None, name)))

    def summary(self) -> dict[str, tuple[int, float]]:
        """label -> (dispatch count, total nanoseconds), slowest first."""
        acc: dict[str, list[float]] = defaultdict(list)
        for name, ns in self.records:
            acc[name].append(ns)
        rows = {k: (len(v), float(sum(v))) for k, v in acc.items()}
        return dict(sorted(rows.items(), key=lambda kv: -kv[1][1]))

    def table(self) -> str:
        """A per-kernel table: calls, total and mean microseconds, share of GPU time."""
        rows = self.summary()
        total = sum(t for _, t in rows.values()) or 1.0
        width = max([len("kernel")] + [len(k) for k in rows])
        lines = [f"{'kernel':<{width}}  {'calls':>6}  {'total us':>10}  {'mean us':>9}  {'%':>5}"]
        for name, (count, ns) in rows.items():
            lines.append(
                f"{name:<{width}}  {count:>6}  {ns / 1e3:>10.1f}  {ns / count / 1e3:>9.2f}"
                f"  {100 * ns / total:>5.1f}"
            )
        return "\n".join(lines)
