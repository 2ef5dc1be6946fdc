"""bfloat16 weights made float16 on the GPU: the stored bytes go from the file straight into
the upload's staging memory, and one pass on the GPU converts them in place.

Why: FLUX.1 dev is 16.9 G bfloat16 values (34 GB) loaded as float16. Converted on the host
(formats.safetensors.bf16_to_f16 on the reading threads), each value was read from the page
cache into a thread's buffer, converted in a dozen numpy passes, written into a result array
and copied again into the staging memory: 12.6 s from the page cache on an H100 host where
diffusers takes 5.6. Here the host only reads: `reading.read_into` fills the mapped staging
slot itself (gpucore.Fill), the GPU copies the bytes into a scratch buffer, converts them
there (shaders/core/bf16_to_f16.wgsl) and copies the result into the parameter's buffer.

Same bits: the shader looks every value up in a table of the host's own cast of all 65,536
bfloat16 patterns (bf16 -> f32 -> f16 with numpy: round to nearest even, overflow to
infinity, NaNs as numpy makes them), with integer operations only, so the GPU holds exactly
what `read_as(key, float16)` gives (tests/diffusion/loaders/test_device_cast.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import gpustd  # noqa: F401  (registers the shaders package, which holds the kernel)
from gpucore import Buffer, Device, Fill, Kernel, phase

from .reading import read_into

__all__ = ["ENABLED", "Bf16Tensor", "bf16_to_f16_table"]

# None: on every adapter but a CPU one (lavapipe, llvmpipe: there the "GPU" pass is CPU work
# too, and a slower one than the host's threads: 0.67 s a 113 MB tensor against 0.15 s, on
# 2 busy cores); False: every bfloat16 tensor converted on the host, as before; True: on any
# adapter (the tests, on CPU adapters)
ENABLED: bool | None = None

_host_table: np.ndarray | None = None


def bf16_to_f16_table() -> np.ndarray:
    """numpy's float16 of each bfloat16 pattern (widened to float32 first, as
    formats.safetensors.bf16_to_f32), two a uint32 word: word i holds pattern 2i's bits in
    its low half, 2i + 1's in its high half (32,768 words)."""
    global _host_table
    if _host_table is None:
        widened = (np.arange(1 << 16, dtype=np.uint32) << 16).view(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is infinity, as the cast
            halves = widened.astype(np.float16)
        _host_table = halves.view(np.uint16).astype("<u2").view("<u4").copy()
    return _host_table


def _device_table(device: Device) -> Buffer[Any]:
    return device.keep("bf16 -> f16 table", lambda: Buffer.from_numpy(
        bf16_to_f16_table(), device=device, read_only=True, label="bf16 -> f16 table"))


class Bf16Tensor:
    """A bfloat16 tensor of a file, `nbytes` bytes at byte `offset` of `path`, on its way to a
    float16 parameter: `write_to(buffer)` puts its values into a float16 Buffer through the
    GPU (module doc), where `writes(dtype, device)` says it can; elsewhere `np.asarray(value)`
    reads it on the host (`read`: the loader's own read, as float16)."""

    def __init__(self, path: Path, offset: int, nbytes: int, shape: tuple[int, ...], *,
                 read: Callable[[], np.ndarray], what: str) -> None:
        self.path, self.offset, self.nbytes = path, offset, nbytes
        self.shape = shape
        self._read = read
        self._what = what

    def __repr__(self) -> str:
        return f"<Bf16Tensor {self._what} {self.shape} of {self.path}>"

    def writes(self, dtype: np.dtype, device: Device) -> bool:
        """Whether `write_to` can fill a Buffer of `dtype` on `device` (else it is read on the
        host): float16, outside a capture, small enough for one storage binding, and
        ENABLED's choice of adapters."""
        wanted = device.info.type != "cpu" if ENABLED is None else ENABLED
        return (wanted and np.dtype(dtype) == np.float16 and device.capturing is None
                and _words(self.nbytes) * 4 <= device.limits["max-storage-buffer-binding-size"])

    def write_to(self, buffer: Buffer[Any]) -> None:
        """Fill `buffer` (float16, this tensor's element count) with the values, converted on
        the GPU; recorded in order after everything recorded before, like Buffer.write."""
        if buffer.dtype != np.float16 or buffer.nbytes != self.nbytes:
            raise ValueError(f"{self._what}: {self.nbytes // 2} bfloat16 values cannot fill "
                             f"a Buffer[{buffer.dtype}] of {buffer.length}")
        device = buffer.device
        words = _words(self.nbytes)
        scratch: Buffer[Any] = Buffer(words, np.uint32, device=device, label="bf16 upload")

        def fill(into: np.ndarray, start: int) -> None:
            n = max(0, min(into.size, self.nbytes - start))
            with phase("read"):  # the rest of the upload: waiting for the GPU's copies
                read_into(self.path, self.offset + start, into[:n], what=self._what)
            into[n:] = 0  # the last word's padding (an odd count)

        device.write_bytes(scratch.wgpu, 0, Fill(words * 4, fill))
        kernel = Kernel.cached("core/bf16_to_f16")
        kernel.dispatch(kernel.groups_for(words), scratch, _device_table(device), n=words)
        device.record_copy(scratch.wgpu, 0, buffer.wgpu, 0, words * 4)
        buffer.host_copy = None

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self._read().reshape(self.shape)
        return values if dtype is None else values.astype(dtype, copy=False)


def _words(nbytes: int) -> int:
    return (nbytes + 3) // 4
