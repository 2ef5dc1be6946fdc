"""Buffer[T]: typed GPU storage."""

from __future__ import annotations

import itertools
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt
import wgpu

from ._default import default_device
from ._device import Device
from ._dtypes import as_dtype, wgsl_scalar
from ._errors import FeatureError

__all__ = ["Buffer"]

T = TypeVar("T", bound=np.generic)
_USAGE = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
_ids = itertools.count()


def _padded(nbytes: int) -> int:
    return max(4, (nbytes + 3) // 4 * 4)  # wgpu copies and bindings work in 4-byte units


class Buffer(Generic[T]):
    """A 1-D array of `length` elements of `dtype` in GPU memory.

    Generic for type checkers (`Buffer[np.float32]`); the dtype is also kept at run time and
    kernels check it against the WGSL element type of the binding before any GPU work.
    `read_only=True` marks data no kernel may write (weights, constants): binding it to a
    `read_write` variable raises, and it takes its own size (256-byte steps) rather than a
    pool size class, since it is kept rather than reused.

    `host_copy`: a host array its owner knows equals the contents (None: not known). Whoever
    moves weights off the device sets it after an upload so the next offload need not read
    back; `write()` (unless told to keep it) and `fill_zero()` clear it.
    """

    host_copy: np.ndarray | None = None

    def __init__(
        self,
        length: int,
        dtype: npt.DTypeLike = np.float32,
        *,
        device: Device | None = None,
        read_only: bool = False,
        label: str | None = None,
    ) -> None:
        if int(length) != length or length < 0:
            raise ValueError(f"buffer length must be a non-negative integer, got {length!r}")
        self.device = device = device or default_device()
        self.dtype: np.dtype = as_dtype(dtype)
        # Fixed for the buffer's life, and read by every dispatch: plain attributes.
        self.wgsl_type = wgsl_scalar(self.dtype)
        if self.wgsl_type == "f16" and not device.has_f16:
            raise FeatureError("shader-f16", "a float16 buffer", device.info.label)
        self.length = int(length)
        self.nbytes = self.length * self.dtype.itemsize
        self.size = size = _padded(self.nbytes)  # bytes bound: nbytes padded to a multiple of 4
        self.read_only = read_only
        self.id = next(_ids)
        device.check_limit("max-buffer-size", size, "this buffer")
        # read-only data (weights, constants) is kept, not reused: no size-class slack
        self.wgpu, self._size_class = device.allocate(
            size, _USAGE, label or f"buffer{self.id}", exact=read_only
        )

    def __del__(self) -> None:
        # Hand the allocation back to the device's pool; guarded for interpreter shutdown.
        try:
            self.device.release(self.wgpu, self._size_class)
        except Exception:  # nothing useful to do while being collected
            pass

    # -- constructors -----------------------------------------------------------------
    @classmethod
    def empty(cls, length: int, dtype: npt.DTypeLike = np.float32, **kwargs: Any) -> Buffer[Any]:
        """A buffer of `length` elements with unspecified contents (pooled memory is
        reused as is). numpy: `np.empty`."""
        return cls(length, dtype, **kwargs)

    @classmethod
    def zeros(cls, length: int, dtype: npt.DTypeLike = np.float32, **kwargs: Any) -> Buffer[Any]:
        """A buffer of `length` zero elements (cleared on the GPU). numpy: `np.zeros`."""
        buffer = cls(length, dtype, **kwargs)
        buffer.fill_zero()
        return buffer

    def fill_zero(self) -> None:
        """Record a GPU-side clear of the whole buffer."""
        self.host_copy = None
        self.device.record_clear(self.wgpu, self.size)

    @classmethod
    def from_numpy(cls, array: np.ndarray, **kwargs: Any) -> Buffer[Any]:
        """A buffer holding a copy of `array` (flattened, C order)."""
        array = np.asarray(array)
        buffer = cls(array.size, array.dtype, **kwargs)
        if array.size:
            buffer.write(array)
        return buffer

    # -- properties -------------------------------------------------------------------
    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        ro = ", read_only" if self.read_only else ""
        return f"Buffer[{self.dtype}](length={self.length}{ro}, device={self.device.name!r})"

    # -- data movement ----------------------------------------------------------------
    def write(self, array: np.ndarray, offset: int = 0, *, keep_host_copy: bool = False
              ) -> None:
        """Copy `array` (any shape, same element count as the region) into the buffer,
        starting at element `offset`. Ordered after all dispatches recorded so far.
        keep_host_copy: where the buffer had a host copy and `array` fills it, `array` becomes
        the new one (its caller must never change it after) rather than the copy being
        forgotten: a weight patched in place (a LoRA) can then leave the device later without
        a read-back, which a capture cannot do."""
        array = np.asarray(array)
        kept = keep_host_copy and self.host_copy is not None and offset == 0 \
            and array.size == self.length
        if array.dtype != self.dtype:
            raise TypeError(
                f"cannot write {array.dtype} data into Buffer[{self.dtype}]; "
                f"convert first with array.astype(np.{self.dtype})"
            )
        if offset < 0 or offset + array.size > self.length:
            raise ValueError(
                f"writing {array.size} elements at offset {offset} overruns a buffer of "
                f"{self.length}"
            )
        self.host_copy = None
        data = np.ascontiguousarray(array).reshape(-1)
        start = offset * self.dtype.itemsize
        if data.nbytes % 4 or start % 4:
            # wgpu writes whole 4-byte words: merge the partial words with what is there.
            lo, hi = start // 4 * 4, _padded(start + data.nbytes)
            word = np.frombuffer(self.device.read_bytes(self.wgpu, lo, hi - lo), np.uint8).copy()
            word[start - lo : start - lo + data.nbytes] = data.view(np.uint8)
            self.device.write_bytes(self.wgpu, lo, word)
        elif data.nbytes:
            self.device.write_bytes(self.wgpu, start, data)
        if kept:
            self.host_copy = data

    def read(self) -> np.ndarray:
        """The buffer's contents as a new 1-D numpy array (submits pending work first)."""
        if self.length == 0:
            return np.empty(0, self.dtype)
        # the staging ring allocates the array: it touches a fresh array's pages ahead of
        # the copies (gpucore._staging._first_touch)
        host = self.device.read_bytes(self.wgpu, 0, self.nbytes)
        return np.frombuffer(host, np.uint8).view(self.dtype)

    async def read_async(self) -> np.ndarray:
        """Like `read()`, but awaits the GPU's pending work instead of blocking the event
        loop; the copy back then runs through the staging ring as `read()`'s does."""
        if self.length == 0:
            return np.empty(0, self.dtype)
        dev = self.device
        if dev.capturing is not None:
            dev.read_bytes(self.wgpu, 0, 4)  # raises CaptureError, saying why
        await dev.synchronize_async()  # every stream: sees all work recorded before it
        return self.read()

    def copy_from(self, other: Buffer[Any]) -> None:
        """Record a GPU-side copy of `other` into this buffer (same dtype and length)."""
        if other.device is not self.device:
            raise ValueError("copy_from needs both buffers on the same device")
        if other.dtype != self.dtype or other.length != self.length:
            raise TypeError(
                f"copy_from needs the same dtype and length: Buffer[{other.dtype}]"
                f"({other.length}) into Buffer[{self.dtype}]({self.length})"
            )
        if self.read_only:
            raise ValueError("cannot copy into a read_only buffer")
        self.device.record_copy(other.wgpu, 0, self.wgpu, 0, self.size)
