"""Parameters whose GPU memory is allocated only when their values arrive (torch: building a
model under `torch.device("meta")` and loading it with `load_state_dict(..., assign=True)`).

    with gpustd.nn.deferred():
        model = UNet2DConditionModel(config, dtype=np.float16)   # allocates nothing
    model.load_state_dict(weights)                              # one tensor at a time

A model built under `deferred()` holds `UnloadedBuffer`s: they know their dtype, length and
device but hold no memory. `load_state_dict` replaces each by a real Buffer as it writes the
tensor (the Tensor object stays the same, so layers and a LoRA manager's parameter table see
no difference), and `gpustd.nn.quantized.set_quantized_weight` just drops it. A model loaded
from a GGUF file so peaks at its loaded size, not at its float size (the GGUF loaders build
their models this way).

A parameter a load never wrote (a strict=False load that left it out) stays unloaded: it is
counted by `parameter_bytes` but not `device_bytes`, offload / restore leave it alone, and any
kernel given it, a read or a write into it raise UnloadedError naming what to do.
`gpustd.nn.module.unloaded(model)` lists such parameters by key.

`load_state_dict(..., to_host=True)` gives each such parameter a `HostBuffer` (the stand-in
gpustd.nn.offload leaves where it moves a weight to host memory) instead of a Buffer: a model
loaded for a memory mode goes straight to host memory, tensor by tensor, and never needs the
GPU memory of its whole size.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np

from gpucore import Buffer, Device, GpuError

__all__ = ["HostBuffer", "OffloadedError", "UnloadedBuffer", "UnloadedError", "deferred",
           "deferring"]

_DEFERRING: ContextVar[bool] = ContextVar("gpustd_nn_deferred", default=False)

_WHAT_TO_DO = ("load its values with module.load_state_dict(...) (a strict=False load leaves "
               "out the keys its state dict lacks: gpustd.nn.module.unloaded(module) lists "
               "them), or build the model outside gpustd.nn.deferred()")


class UnloadedError(GpuError, TypeError):
    """A parameter built under gpustd.nn.deferred() was used before its values were loaded (a
    TypeError too, as a kernel given anything else that is not a Buffer raises)."""


class UnloadedBuffer:
    """Stands in for a parameter's Buffer until its values arrive (see the module doc): dtype,
    length, nbytes, device and read_only as the Buffer's will be; holds no memory; `wgpu`,
    `read` and `write` raise UnloadedError."""

    __slots__ = ("__weakref__", "device", "dtype", "length", "nbytes", "read_only")
    host_copy = None  # as a Buffer's: nothing on the host either

    def __init__(self, length: int, dtype: np.dtype, device: Device, read_only: bool) -> None:
        self.device = device
        self.dtype = dtype
        self.length = int(length)
        self.nbytes = self.length * dtype.itemsize
        self.read_only = read_only

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"UnloadedBuffer[{self.dtype}](length={self.length})"

    def _error(self, doing: str) -> UnloadedError:
        return UnloadedError(f"cannot {doing} a {self.dtype} parameter of {self.length} values "
                             f"that was never loaded: {_WHAT_TO_DO}")

    @property
    def wgpu(self) -> Any:
        raise self._error("run a kernel on")

    def refuse_binding(self) -> None:
        """Called by a kernel given this instead of a Buffer (gpucore Kernel): says why."""
        raise self._error("run a kernel on")

    def read(self) -> np.ndarray:
        raise self._error("read")

    def write(self, array: np.ndarray, offset: int = 0) -> None:
        raise self._error("write part of")

    def allocate(self, data: np.ndarray) -> Buffer[Any]:
        """A device Buffer holding `data` (this parameter's every value, its dtype)."""
        data = np.asarray(data)
        if data.dtype != self.dtype or data.size != self.length:
            raise ValueError(f"a {self.dtype} parameter of {self.length} values cannot take "
                             f"{data.size} {data.dtype} values")
        buffer: Buffer[Any] = Buffer(self.length, self.dtype, device=self.device,
                                     read_only=self.read_only)
        if data.size:
            buffer.write(data)
        return buffer

    def keep_on_host(self, data: np.ndarray) -> HostBuffer:
        """A HostBuffer holding `data` (as `allocate`'s Buffer would, in host memory): a
        parameter loaded straight to where a memory mode keeps it, never on the GPU.
        `data` is copied unless it owns its memory (not a view of a file or a reused
        buffer), since the HostBuffer keeps it."""
        data = np.asarray(data)
        if data.dtype != self.dtype or data.size != self.length:
            raise ValueError(f"a {self.dtype} parameter of {self.length} values cannot take "
                             f"{data.size} {data.dtype} values")
        root = data
        while isinstance(root.base, np.ndarray):
            root = root.base
        if root.base is not None or not root.flags.owndata:
            data = data.copy()
        return HostBuffer(data, self.device, self.read_only)


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


def deferring() -> bool:
    """Whether `parameter()` now makes UnloadedBuffers (inside `deferred()`)."""
    return _DEFERRING.get()


@contextmanager
def deferred(on: bool = True) -> Iterator[None]:
    """Inside it, `gpustd.nn.parameter()` (every layer's weights) allocates no GPU memory until
    `load_state_dict` writes the values (module doc). Per thread / task; `deferred(False)`
    turns it off inside. torch: `with torch.device("meta"):`."""
    token = _DEFERRING.set(on)
    try:
        yield
    finally:
        _DEFERRING.reset(token)
