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
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np

from gpucore import Buffer, Device, GpuError

__all__ = ["UnloadedBuffer", "UnloadedError", "deferred", "deferring"]

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
