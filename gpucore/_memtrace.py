"""Where a device's memory goes: a debugging aid, off unless asked for (torch's equivalent is
`torch.cuda.memory._record_memory_history` and its snapshot).

    with gpucore.trace_memory(device, skip=("gpustd",)) as trace:
        with trace.stage("text encoder"):
            ...
    print(trace.report())

While a trace is open, every buffer the device puts in use (made, taken from the pool, or
pinned by a capture from the pool's idle lists) is counted under its origin: the innermost
frame of the Python stack outside gpucore and the packages in `skip`, with what it called
(`layers.py:83 ResnetBlock2D.forward > Conv2d`). A buffer a capture pins keeps the origin it
had when it was last handed out, marked `(pinned)`. At each new high of the bytes in use the
trace keeps the per-origin totals of what is live then (`at_peak`), and each stage
(`trace.stage(label)`, nested labels joined by "/") keeps its own high (`stages`). The counts
are memory_stats' (size classes); what was in use before the trace began is one origin,
"before the trace".

It costs a stack walk per allocation: for finding where memory goes, never for timing.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from types import FrameType

    from wgpu.classes import GPUBuffer

__all__ = ["MemoryTrace", "trace_memory"]

_BEFORE = "before the trace"
_GPUCORE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class MemoryTrace:
    """What a trace saw (see the module doc). Bytes throughout."""

    skip: tuple[str, ...] = ()
    peak: int = 0  # the most bytes in use at once
    peak_stage: str = ""  # the stage open at that moment
    at_peak: dict[str, tuple[int, int]] = field(default_factory=dict)  # origin -> (n, bytes)
    stages: dict[str, int] = field(default_factory=dict)  # stage -> its most bytes in use
    _label: list[str] = field(default_factory=list)
    _live: dict[int, tuple[int, str]] = field(default_factory=dict)  # id(buffer) -> size, origin
    _origins: dict[int, str] = field(default_factory=dict)  # every buffer seen -> its origin
    _totals: dict[str, list[int]] = field(default_factory=dict)  # origin -> [n, bytes] live

    @contextlib.contextmanager
    def stage(self, label: str) -> Iterator[None]:
        """Count what is allocated inside the block under `label` (in `stages`)."""
        self._label.append(label)
        try:
            yield
        finally:
            self._label.pop()

    def report(self, top: int = 12) -> str:
        """The peak, each stage's high and the `top` origins live at the peak, as text."""
        mib = float(1 << 20)
        lines = [f"peak {self.peak / mib:,.1f} MiB in use, in stage {self.peak_stage or '-'}"]
        lines += [f"  stage {name}: {nbytes / mib:,.1f} MiB" for name, nbytes in
                  self.stages.items()]
        lines.append("live at the peak, largest first:")
        ranked = sorted(self.at_peak.items(), key=lambda item: -item[1][1])
        lines += [f"  {nbytes / mib:9,.1f} MiB {count:5} x {origin}"
                  for origin, (count, nbytes) in ranked[:top]]
        rest = sum(nbytes for _, (_, nbytes) in ranked[top:])
        if rest:
            lines.append(f"  {rest / mib:9,.1f} MiB in {len(ranked) - top} more origins")
        return "\n".join(lines)

    # -- the pool's hooks (called under its lock) ----------------------------------------
    def _origin(self) -> str:
        frame: FrameType | None = sys._getframe(1)
        called = "?"
        skipped = (_GPUCORE, *self.skip)
        while frame is not None:
            code = frame.f_code
            if not any(part in code.co_filename for part in skipped):
                name = os.path.basename(code.co_filename)
                return f"{name}:{frame.f_lineno} {code.co_qualname} > {called}"
            called = code.co_name
            if called == "__call__" and "self" in frame.f_locals:  # a module: name its class
                called = type(frame.f_locals["self"]).__name__
            frame = frame.f_back
        return called

    def grew(self, buffer: GPUBuffer, size: int, in_use: int, pinned: bool = False) -> None:
        """`buffer` (`size` bytes) is in use now, `in_use` bytes in all; `pinned`: by a
        capture, from the pool's idle lists."""
        origin = self._origins.get(id(buffer)) if pinned else None
        origin = f"{origin} (pinned)" if origin else self._origin()
        self._origins[id(buffer)] = origin
        self._add(id(buffer), size, origin, in_use)

    def _add(self, key: int, size: int, origin: str, in_use: int) -> None:
        self._live[key] = (size, origin)
        total = self._totals.setdefault(origin, [0, 0])
        total[0] += 1
        total[1] += size
        label = "/".join(self._label)
        if in_use > self.stages.get(label, 0):
            self.stages[label] = in_use
        if in_use > self.peak:
            self.peak, self.peak_stage = in_use, label
            self.at_peak = {k: (n, b) for k, (n, b) in self._totals.items() if n}

    def shrank(self, buffer: GPUBuffer, size: int) -> None:
        """`buffer` (`size` bytes) is no longer in use (idle in the pool, or freed)."""
        _, origin = self._live.pop(id(buffer), (size, _BEFORE))
        total = self._totals.get(origin)
        if total is not None:  # one in use before the trace: that origin's bytes
            total[0] -= origin != _BEFORE
            total[1] -= size


class _Pool(Protocol):
    trace: MemoryTrace | None  # the pool reports its allocations to it


class _Stats(Protocol):
    @property
    def allocated(self) -> int: ...


class _Traced(Protocol):
    """What a trace needs of its device (a gpucore.Device)."""

    @property
    def pool(self) -> _Pool: ...

    def memory_stats(self) -> _Stats: ...


@contextlib.contextmanager
def trace_memory(device: _Traced, *, skip: tuple[str, ...] = ()) -> Iterator[MemoryTrace]:
    """Trace `device`'s allocations while the block runs (see the module doc); `skip`: path
    parts of packages whose frames are not origins (`("gpustd",)`: the model code calling an
    op, not the op)."""
    trace = MemoryTrace(skip=tuple(skip))
    if device.pool.trace is not None:
        raise RuntimeError("a memory trace is already open on this device; traces do not nest")
    before = device.memory_stats().allocated
    if before:
        trace._add(-1, before, _BEFORE, before)
    device.pool.trace = trace
    try:
        yield trace
    finally:
        device.pool.trace = None
