"""What a dispatch binds: a cache of bind groups and the per-batch params arena."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import wgpu
from wgpu.classes import GPUBindGroup, GPUBindGroupLayout, GPUBuffer, GPUDevice, GPUQueue

__all__ = ["BindGroupCache", "ParamsArena", "create_bind_group"]


class BindGroupCache:
    """Bind groups by (layout, buffers): a kernel called on the same buffers reuses one.

    A cached group holds its buffers, so their ids cannot be reused by other buffers while
    the key exists; but it must not hold their memory once gpucore is done with a buffer.
    `evict(buffer)` drops every group that names it: the device calls it when its pool lets a
    buffer go, so a freed activation's memory is freed with it. The least recently used
    groups go first when `capacity` is reached.
    """

    def __init__(self, device: GPUDevice, capacity: int = 8192) -> None:
        self._device = device
        self._capacity = capacity
        self._groups: OrderedDict[
            tuple, tuple[GPUBindGroup, GPUBindGroupLayout, list[GPUBuffer]]] = OrderedDict()
        self._by_buffer: dict[int, set[tuple]] = {}  # id(wgpu buffer) -> keys naming it
        self.created = 0  # bind groups made: a replayed or warm step should add none

    def get(self, layout: GPUBindGroupLayout,
            entries: tuple[tuple[GPUBuffer, int, int], ...]) -> GPUBindGroup:
        """The group for `(wgpu buffer, offset, size)` entries in binding order."""
        key = (id(layout), *((id(b), o, s) for b, o, s in entries))
        found = self._groups.get(key)
        if found is not None:
            self._groups.move_to_end(key)
            return found[0]
        group = create_bind_group(self._device, layout, entries)
        self.created += 1
        buffers = [b for b, _, _ in entries]
        self._groups[key] = (group, layout, buffers)
        for b in buffers:
            self._by_buffer.setdefault(id(b), set()).add(key)
        if len(self._groups) > self._capacity:
            self._forget(next(iter(self._groups)))
        return group

    def create(self, layout: GPUBindGroupLayout,
               entries: Sequence[tuple[GPUBuffer, int, int]]) -> GPUBindGroup:
        """A group of its caller's own, not cached (a capture keeps its groups), counted in
        `created` like the cached ones."""
        self.created += 1
        return create_bind_group(self._device, layout, entries)

    def evict(self, buffer: GPUBuffer) -> None:
        """Drop every cached group that binds `buffer` (its memory can then be freed)."""
        for key in list(self._by_buffer.get(id(buffer), ())):
            self._forget(key)

    def _forget(self, key: tuple) -> None:
        entry = self._groups.pop(key, None)
        if entry is None:
            return
        for b in entry[2]:
            keys = self._by_buffer.get(id(b))
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_buffer[id(b)]

    def clear(self) -> None:
        self._groups.clear()
        self._by_buffer.clear()

    def __len__(self) -> int:
        return len(self._groups)


def create_bind_group(device: GPUDevice, layout: GPUBindGroupLayout,
                      entries: Sequence[tuple[GPUBuffer, int, int]]) -> GPUBindGroup:
    """A wgpu bind group for `(wgpu buffer, offset, size)` entries in binding order."""
    resources = [{"binding": i, "resource": {"buffer": b, "offset": o, "size": s}}
                 for i, (b, o, s) in enumerate(entries)]
    return device.create_bind_group(layout=layout, entries=resources)


class ParamsArena:
    """One uniform buffer holding every dispatch's params struct for a batch.

    Each dispatch takes a slot (selected with a dynamic offset); `upload` writes the used
    slots just before the batch is submitted. The queue orders that write after the previous
    batch, so slots are reused from 0 batch after batch.
    """

    def __init__(self, device: GPUDevice, alignment: int, slots: int = 4096) -> None:
        self.stride = max(alignment, 256)
        self.slots = slots
        self.buffer = device.create_buffer(
            label="gpucore params", size=self.stride * slots,
            usage=wgpu.BufferUsage.UNIFORM | wgpu.BufferUsage.COPY_DST)
        self._bytes = bytearray(self.stride * slots)
        self._used = 0

    @property
    def full(self) -> bool:
        return self._used == self.slots

    def add(self, data: bytes) -> int:
        """Store one params struct; returns its byte offset (the dynamic offset)."""
        offset = self._used * self.stride
        self._bytes[offset:offset + len(data)] = data
        self._used += 1
        return offset

    def upload(self, queue: GPUQueue) -> None:
        """Write the used slots to the GPU (call right before submitting the batch)."""
        if self._used:
            queue.write_buffer(self.buffer, 0, memoryview(self._bytes)[:self._used * self.stride])
            self._used = 0
