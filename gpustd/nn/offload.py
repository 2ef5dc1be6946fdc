"""A module's weights moved to host memory and back (torch: `module.to("cpu")` / `.to("cuda")`).

`offload(module)` frees the GPU buffers of every parameter under `module` (float Tensors and
gpustd.quant QuantizedTensors alike), keeping the values on the host; `restore(module)` uploads
them into new buffers. The Tensor objects stay the same, so the layers, a LoRA manager's
parameter table and the state-dict keys see no difference: while offloaded a Tensor's `buffer`
is a `HostBuffer`, which reads and writes on the host (a LoRA patched into an offloaded layer
lands in the host copy) and refuses to be bound to a kernel, saying what to do.

A parameter built under gpustd.nn.deferred() and never loaded (an UnloadedBuffer) holds no
memory anywhere: offload and restore leave it as it is, `device_bytes` does not count it and
`parameter_bytes` does (what it will hold once loaded).

The host copy is kept after a restore (`Buffer.host_copy`), so offloading weights nobody wrote
since is free: streaming the same blocks every step (--lowvram) reads nothing back. A write
into the buffer (a LoRA patched in place) clears it, and the next offload reads back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Buffer, Device, GpuError

from .._tensor import Tensor
from .deferred import UnloadedBuffer
from .module import Module, _walk
from .quantized import quantized_weights

__all__ = ["HostBuffer", "OffloadedError", "device_bytes", "is_offloaded", "offload",
           "parameter_bytes", "restore"]


class OffloadedError(GpuError):
    """A kernel was given a weight whose values are in host memory (offloaded)."""


class HostBuffer:
    """Stands in for a Buffer whose values were moved to host memory (see the module doc):
    dtype, length, nbytes and device as the Buffer's; `read`/`write` on the host copy; `wgpu`
    and a kernel binding it raise OffloadedError."""

    __slots__ = ("__weakref__", "array", "device", "dtype", "length", "nbytes", "read_only")

    def __init__(self, array: np.ndarray, device: Device, read_only: bool) -> None:
        self.array = np.ascontiguousarray(array).reshape(-1)
        self.device = device
        self.dtype = self.array.dtype
        self.length = self.array.size
        self.nbytes = self.array.nbytes
        self.read_only = read_only

    @property
    def wgpu(self) -> Any:
        self.refuse_binding()

    def refuse_binding(self) -> None:
        """What a gpucore Kernel given this stand-in for a Buffer calls: OffloadedError."""
        raise OffloadedError(f"this weight ({self.length} {self.dtype}) is offloaded to host "
                             "memory; bring its module back with "
                             "gpustd.nn.offload.restore(module) (or run it under the "
                             "pipeline's memory mode, which does) before using it")

    def read(self) -> np.ndarray:
        return self.array.copy()

    def write(self, array: np.ndarray, offset: int = 0) -> None:
        data = np.asarray(array)
        if data.dtype != self.dtype:
            raise TypeError(f"cannot write {data.dtype} data into an offloaded {self.dtype} "
                            "weight; convert first")
        self.array = self.array.copy()  # a Buffer's host_copy may share it: never in place
        self.array[offset:offset + data.size] = data.reshape(-1)

    def upload(self) -> Buffer[Any]:
        """A new device Buffer of these values (remembered as its host copy)."""
        buffer = Buffer.from_numpy(self.array, device=self.device, read_only=self.read_only)
        buffer.host_copy = self.array
        return buffer


def _tensors(module: Module) -> list[Tensor]:
    return [tensor for _key, _owner, _attr, tensor in _walk(module, "")]


def is_offloaded(module: Module) -> bool:
    """Whether any parameter under `module` is in host memory."""
    return (any(isinstance(t.buffer, HostBuffer) for t in _tensors(module))
            or any(not q.on_device for q in quantized_weights(module).values()))


def offload(module: Module) -> int:
    """Move every parameter under `module` to host memory (freeing its GPU buffer into the
    device's pool: `device.empty_pool()` returns it to the driver). Returns the bytes moved.
    torch: `module.to("cpu")`."""
    moved = 0
    for tensor in _tensors(module):
        buffer = tensor.buffer
        if isinstance(buffer, (HostBuffer, UnloadedBuffer)):  # nothing on the device
            continue
        host = buffer.host_copy if buffer.host_copy is not None else buffer.read()
        tensor.buffer = HostBuffer(host, buffer.device, buffer.read_only)  # type: ignore[assignment]
        moved += buffer.nbytes
    for weight in quantized_weights(module).values():
        if weight.on_device:
            weight.offload()
            moved += weight.nbytes
    return moved


def restore(module: Module) -> int:
    """Upload every offloaded parameter under `module` into a new GPU buffer. Returns the
    bytes uploaded. torch: `module.to("cuda")`."""
    moved = 0
    for tensor in _tensors(module):
        if isinstance(tensor.buffer, HostBuffer):
            tensor.buffer = tensor.buffer.upload()
            moved += tensor.buffer.nbytes
    for weight in quantized_weights(module).values():
        if not weight.on_device:
            weight.restore()
            moved += weight.nbytes
    return moved


def parameter_bytes(module: Module) -> int:
    """Bytes of every parameter under `module`, wherever it is (quantized ones as stored)."""
    return (sum(t.nbytes for t in _tensors(module))
            + sum(q.nbytes for q in quantized_weights(module).values()))


def device_bytes(module: Module) -> int:
    """Bytes of the parameters under `module` now in GPU memory."""
    return (sum(t.nbytes for t in _tensors(module)
                if not isinstance(t.buffer, (HostBuffer, UnloadedBuffer)))
            + sum(q.nbytes for q in quantized_weights(module).values() if q.on_device))
