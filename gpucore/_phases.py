"""Phases: where a process's wall time goes (import, file read, dtype conversion, upload, kernel
compile, autotuning, capture recording, denoising, decode, PNG, ...).

Code marks its phases with `with phase("compile"):`; that costs one global read while no
`Phases` is collecting. Inside `with Phases() as phases:` each marked phase's seconds and
entries are counted. Time belongs to the innermost phase open on its thread: a kernel compiled
while a capture records counts as "compile", not "capture", so the phases of one thread add up
to at most the wall time, and `other` is what no phase claimed. Work on other threads (kernels
built concurrently) overlaps the wall time instead.

    with gpucore.Phases() as phases:
        picture = pipe.txt2img("a red circle")
    print(phases.table())        # compile 1.84 s (32), capture 0.61 s (2), ... other 0.2 s
"""

from __future__ import annotations

import os
import threading
import time
from types import TracebackType
from typing import Any

__all__ = ["Phases", "phase", "process_started"]

_active: Phases | None = None
_local = threading.local()  # .stack: [name, since] of the phases open on this thread


class Phases:
    """Seconds and entries per phase while active (`with Phases():`; one at a time)."""

    def __init__(self, *, started: float | None = None) -> None:
        self.started = time.perf_counter() if started is None else started
        self.ended: float | None = None
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float, count: int = 1) -> None:
        """Count `seconds` (and `count` entries) to phase `name`, measured elsewhere."""
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds
            self.counts[name] = self.counts.get(name, 0) + count

    def __enter__(self) -> Phases:
        global _active
        if _active is not None:
            raise RuntimeError("a gpucore.Phases is already collecting; use that one")
        _active = self
        return self

    def __exit__(self, *exc: object) -> None:
        global _active
        self.ended = time.perf_counter()
        _active = None

    @property
    def total(self) -> float:
        """Wall seconds from `started` to the end (or to now while collecting)."""
        return (self.ended if self.ended is not None else time.perf_counter()) - self.started

    def split(self) -> dict[str, Any]:
        """{"total_s", "other_s", "phases": {name: {"s", "count"}}} (JSON-ready, rounded)."""
        with self._lock:
            phases = {name: {"s": round(s, 3), "count": self.counts[name]}
                      for name, s in self.seconds.items()}
            claimed = sum(self.seconds.values())
        return {"total_s": round(self.total, 3), "other_s": round(self.total - claimed, 3),
                "phases": phases}

    def table(self) -> str:
        """One line: each phase's seconds (entries), then what no phase claimed, then the total."""
        split = self.split()
        parts = [f"{name} {p['s']:.2f} s ({p['count']})" for name, p in split["phases"].items()]
        parts.append(f"other {split['other_s']:.2f} s")
        return f"{', '.join(parts)}; total {split['total_s']:.2f} s"


class phase:
    """`with phase("compile"):` counts the block's wall time to the active Phases, if any."""

    __slots__ = ("_phases", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._phases: Phases | None = None

    def __enter__(self) -> None:
        phases = self._phases = _active
        if phases is None:
            return
        now = time.perf_counter()
        stack = getattr(_local, "stack", None)
        if stack is None:
            stack = _local.stack = []
        if stack:  # the outer phase pauses while this one runs
            outer = stack[-1]
            phases.add(outer[0], now - outer[1], count=0)
        stack.append([self.name, now])

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        phases = self._phases
        if phases is None:
            return
        now = time.perf_counter()
        stack = _local.stack
        name, since = stack.pop()
        phases.add(name, now - since)
        if stack:
            stack[-1][1] = now


def active_phases() -> Phases | None:
    """The Phases collecting now, if any (to count time measured before it began)."""
    return _active


def process_started() -> float | None:
    """When this process started, on time.perf_counter()'s clock (to 10 ms, from Linux's
    /proc); None where that is not known."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # after the command, which may hold spaces
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        now = time.perf_counter()
        ticks = os.sysconf("SC_CLK_TCK")
        return now - (uptime - int(fields[19]) / ticks)
    except (OSError, ValueError, IndexError):
        return None
