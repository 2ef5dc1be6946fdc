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
into the buffer clears it, and the next offload reads back. `keep_host_copy` takes the host
copies of weights that never left the GPU (a model loaded there), so that offloading them
later needs no read-back, which a capture cannot record (gpustd.nn.residency evicts inside
captures); `needs_read_back` says whether an offload now would read back.
"""

from __future__ import annotations

from .._tensor import Tensor
from .deferred import HostBuffer, OffloadedError, UnloadedBuffer
from .module import Module, _walk
from .quantized import quantized_weights

__all__ = ["HostBuffer", "OffloadedError", "device_bytes", "is_offloaded", "keep_host_copy",
           "needs_read_back", "offload", "parameter_bytes", "restore", "upload_sizes"]


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


def keep_host_copy(module: Module) -> int:
    """Read back every parameter under `module` that is on the GPU with no host copy and keep
    the values as its host copy (`Buffer.host_copy`), so that `offload` reads nothing back
    (not inside a capture: a read-back raises CaptureError there). Host memory then holds
    the module's weights, as it does for one loaded to host memory and brought in. Returns
    the bytes read back. torch has no such step: its `module.to("cpu")` always copies."""
    read = 0
    for tensor in _tensors(module):
        buffer = tensor.buffer
        if not isinstance(buffer, (HostBuffer, UnloadedBuffer)) and buffer.host_copy is None:
            buffer.host_copy = buffer.read()
            read += buffer.nbytes
    for weight in quantized_weights(module).values():
        if weight.blocks is not None and weight.blocks.host_copy is None:
            weight.blocks.host_copy = weight.blocks.read()
            read += weight.nbytes
    return read


def needs_read_back(module: Module) -> bool:
    """Whether `offload(module)` now would read the GPU back: a parameter on the GPU with no
    host copy (one that never left, or was written since it came: a LoRA patched in place)."""
    return (any(not isinstance(t.buffer, (HostBuffer, UnloadedBuffer))
                and t.buffer.host_copy is None for t in _tensors(module))
            or any(q.blocks is not None and q.blocks.host_copy is None
                   for q in quantized_weights(module).values()))


def upload_sizes(module: Module) -> tuple[list[int], int]:
    """What `restore(module)` would upload now: the byte sizes of its read-only parameters
    in host memory (each a new weight Buffer), and the bytes of the rest (quantized weights,
    writable parameters)."""
    weights, other = [], 0
    for tensor in _tensors(module):
        if isinstance(tensor.buffer, HostBuffer):
            if tensor.buffer.read_only:
                weights.append(tensor.buffer.nbytes)
            else:
                other += tensor.buffer.nbytes
    other += sum(q.nbytes for q in quantized_weights(module).values() if not q.on_device)
    return weights, other


def parameter_bytes(module: Module) -> int:
    """Bytes of every parameter under `module`, wherever it is (quantized ones as stored)."""
    return (sum(t.nbytes for t in _tensors(module))
            + sum(q.nbytes for q in quantized_weights(module).values()))


def device_bytes(module: Module) -> int:
    """Bytes of the parameters under `module` now in GPU memory."""
    return (sum(t.nbytes for t in _tensors(module)
                if not isinstance(t.buffer, (HostBuffer, UnloadedBuffer)))
            + sum(q.nbytes for q in quantized_weights(module).values() if q.on_device))
