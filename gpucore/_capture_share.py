"""A capture's temporaries share buffers by lifetime.

The captured call's first run takes its temporaries from the pool, which hands a freed buffer
only to a request of the same size class. So the capture ends up pinning, for each size class,
as many buffers as that class had alive at once, whenever that was: the sum of the classes'
own peaks, not the peak of their sum (the SD 1.5 UNet step at 512 px, float16, CFG batch 2:
~360 MiB pinned for ~130 MiB alive at once).

The recorded stream says when each temporary is used: a buffer's uses from one allocation
(an "alloc" mark the device records when it hands the buffer out) to the next are one value.
Before the capture's bind groups are made, `plan` puts values whose uses do not overlap in
one buffer: the largest first, each into the smallest buffer already chosen that is large
enough and free for its whole span, else into its own. A buffer that held a value before
the capture (uses before its first mark) is no one else's: every replay may read that value
again. Only whole buffers are shared, each use
at the offset it had: WebGPU forbids one buffer bound writable and read-only in the same
dispatch, which sub-allocating one arena would run into. The GPU still sees each buffer
written after its last reader, in order, as the pool's reuse already does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["plan", "remap"]

Value = tuple[int, int]  # (id of the buffer it was made in, its allocations before it there)


def _touched(command: tuple) -> Iterator[Any]:
    """The wgpu buffers one recorded command uses (see Capture.add_*)."""
    kind = command[0]
    if kind == "dispatch":
        yield from (entry[0] for entry in command[3])
    elif kind == "copy":
        yield command[1]
        yield command[3]
    elif kind != "alloc":  # clear, write
        yield command[1]


def _values(commands: list[tuple], sizes: dict[int, int]) -> dict[Value, tuple[int, int]]:
    """Each value of the buffers in `sizes` -> (first, last) command index using it."""
    made: dict[int, int] = {}
    spans: dict[Value, tuple[int, int]] = {}
    for index, command in enumerate(commands):
        if command[0] == "alloc":
            key = id(command[1])
            if key in sizes:
                made[key] = made.get(key, 0) + 1
            continue
        for buffer in _touched(command):
            key = id(buffer)
            if key in sizes:
                value = (key, made.get(key, 0))
                spans[value] = (spans.get(value, (index, index))[0], index)
    return spans


def plan(commands: list[tuple], sizes: dict[int, int]) -> dict[Value, int]:
    """{value: id of the buffer it uses} for the values of the temporaries `sizes` ({id(wgpu
    buffer): size class}), see the module doc."""
    spans = _values(commands, sizes)
    hosts: dict[int, list[tuple[int, int]]] = {}  # id(buffer) -> the spans it serves
    mapping: dict[Value, int] = {}
    for value in spans:
        if value[1] == 0:  # held before the capture, which may read it on every replay:
            hosts[value[0]] = [(0, len(commands))]  # its buffer stays its own
            mapping[value] = value[0]
    unused = sorted((size, key) for key, size in sizes.items() if key not in hosts)
    rest = sorted((v for v in spans if v not in mapping),
                  key=lambda v: (-sizes[v[0]], spans[v]))
    for value in rest:
        size, (first, last) = sizes[value[0]], spans[value]
        best = None
        for key, served in hosts.items():
            if sizes[key] >= size and (best is None or sizes[key] < sizes[best]) and all(
                    last < start or end < first for start, end in served):
                best = key
        if best is None:  # a buffer of its own: its own if free, else the smallest that fits
            fits = [entry for entry in unused if entry[0] >= size]
            if not fits:
                return {v: v[0] for v in spans}  # as recorded
            own = (size, value[0])
            best = (own if own in unused else fits[0])[1]
            unused.remove((sizes[best], best))
            hosts[best] = []
        hosts[best].append((first, last))
        mapping[value] = best
    return mapping


def remap(commands: list[tuple], mapping: dict[Value, int],
          buffers: dict[int, Any]) -> list[tuple]:
    """`commands` without the alloc marks, each use of a value in `mapping` in the buffer it
    maps to (`buffers`: id -> wgpu buffer)."""
    made: dict[int, int] = {}

    def use(buffer: Any) -> Any:
        key = id(buffer)
        host = mapping.get((key, made.get(key, 0)))
        return buffer if host is None else buffers[host]

    shared: list[tuple] = []
    for command in commands:
        kind = command[0]
        if kind == "alloc":
            key = id(command[1])
            made[key] = made.get(key, 0) + 1
            continue
        if kind == "dispatch":
            entries = tuple((use(b), offset, size) for b, offset, size in command[3])
            command = (*command[:3], entries, *command[4:])
        elif kind == "copy":
            command = (kind, use(command[1]), command[2], use(command[3]), *command[4:])
        else:
            command = (kind, use(command[1]), *command[2:])
        shared.append(command)
    return shared
