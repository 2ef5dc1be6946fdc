"""Tensor: a Buffer plus a shape (contiguous, C order)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Buffer, Device, Kernel, as_dtype, default_device, wgsl_scalar

__all__ = ["Tensor", "asarray", "empty", "zeros"]


def _normalize_shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    return shape


class Tensor:
    """An n-dimensional array in GPU memory: `buffer` viewed with `shape`.

    Contiguous and C-ordered; `reshape` shares the buffer. numpy equivalent: `np.ndarray`.
    """

    __slots__ = ("buffer", "shape")

    def __init__(self, buffer: Buffer[Any], shape: Any) -> None:
        shape = _normalize_shape(shape)
        if math.prod(shape) != buffer.length:
            raise ValueError(f"shape {shape} needs {math.prod(shape)} elements, buffer has "
                             f"{buffer.length}")
        self.buffer = buffer
        self.shape = shape

    # -- constructors -----------------------------------------------------------------
    @classmethod
    def empty(cls, shape: Any, dtype: Any = np.float32, *, device: Device | None = None) -> Tensor:
        shape = _normalize_shape(shape)
        return cls(Buffer(math.prod(shape), dtype, device=device), shape)

    @classmethod
    def zeros(cls, shape: Any, dtype: Any = np.float32, *, device: Device | None = None) -> Tensor:
        shape = _normalize_shape(shape)
        return cls(Buffer.zeros(math.prod(shape), dtype, device=device), shape)

    @classmethod
    def from_numpy(cls, array: Any, *, dtype: Any = None, device: Device | None = None,
                   read_only: bool = False) -> Tensor:
        """Copy a numpy array (or anything np.asarray takes) to the GPU.

        float64 becomes float32, complex128 complex64 and int64 int32 unless `dtype` says
        otherwise (GPUs rarely have the wide types), so `Tensor.from_numpy(np.random.rand(3))`
        does what one means. 0-d arrays stay 0-d.
        """
        array = np.asarray(array)
        if dtype is None:
            dtype = {np.dtype(np.float64): np.float32, np.dtype(np.int64): np.int32,
                     np.dtype(np.complex128): np.complex64,
                     np.dtype(np.bool_): np.uint32}.get(array.dtype, array.dtype)
        dtype = as_dtype(dtype)
        data = np.asarray(array, dtype=dtype, order="C")  # ascontiguousarray makes 0-d 1-d
        buffer = Buffer(data.size, dtype, device=device, read_only=read_only)
        if data.size:
            buffer.write(data)
        return cls(buffer, data.shape)

    # -- properties -------------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        return self.buffer.dtype

    @property
    def device(self) -> Device:
        return self.buffer.device

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return self.buffer.length

    @property
    def nbytes(self) -> int:
        return self.buffer.nbytes

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, device={self.device.name!r})"

    # -- conversion -------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """A host copy with this shape and dtype (submits and waits for pending work)."""
        return self.buffer.read().reshape(self.shape)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.numpy()
        return out if dtype is None else out.astype(dtype)

    def reshape(self, *shape: Any) -> Tensor:
        """Same buffer, new shape (one dimension may be -1). numpy: `a.reshape(shape)`."""
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        shape = tuple(int(s) for s in shape)
        if shape.count(-1) > 1:
            raise ValueError("only one dimension may be -1")
        if -1 in shape:
            known = math.prod(s for s in shape if s != -1)
            if known == 0 or self.size % known:
                raise ValueError(f"cannot reshape {self.shape} into {shape}")
            shape = tuple(self.size // known if s == -1 else s for s in shape)
        if math.prod(shape) != self.size:
            raise ValueError(f"cannot reshape {self.shape} ({self.size} elements) into {shape}")
        return Tensor(self.buffer, shape)

    def astype(self, dtype: Any) -> Tensor:
        """A converted copy (float32 <-> float16 needs shader-f16). numpy: `a.astype(dtype)`."""
        dtype = as_dtype(dtype)
        out = Tensor.empty(self.shape, dtype, device=self.device)
        if dtype == self.dtype:
            out.buffer.copy_from(self.buffer)
            return out
        kernel = _cast_kernel(self.dtype, dtype)
        kernel.dispatch(kernel.groups_for(self.size), self.buffer, out.buffer, n=self.size)
        return out

    def to(self, device: Device) -> Tensor:
        """A copy on another device (through host memory)."""
        return Tensor.from_numpy(self.numpy(), device=device)

    # -- arithmetic operators: numpy broadcasting, via gpustd.elementwise / gpustd.unary -
    def __add__(self, other: Any) -> Tensor:
        from .elementwise import add

        return add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        from .elementwise import add

        return add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        from .elementwise import subtract

        return subtract(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        from .elementwise import subtract

        return subtract(other, self)

    def __mul__(self, other: Any) -> Tensor:
        from .elementwise import multiply

        return multiply(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        from .elementwise import multiply

        return multiply(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        from .elementwise import divide

        return divide(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        from .elementwise import divide

        return divide(other, self)

    def __pow__(self, other: Any) -> Tensor:
        from .elementwise import power

        return power(self, other)

    def __rpow__(self, other: Any) -> Tensor:
        from .elementwise import power

        return power(other, self)

    def __neg__(self) -> Tensor:
        from .unary import negative

        return negative(self)

    def __abs__(self) -> Tensor:
        from .unary import abs as absolute

        return absolute(self)


def _cast_kernel(src: np.dtype, dst: np.dtype) -> Kernel:
    return Kernel.cached("core/cast", types={"Src": wgsl_scalar(src), "Dst": wgsl_scalar(dst)})


def asarray(data: Any, *, dtype: Any = None, device: Device | None = None) -> Tensor:
    """A Tensor from a Tensor (returned as is) or anything numpy takes. numpy: `np.asarray`."""
    if isinstance(data, Tensor):
        return data if dtype is None or as_dtype(dtype) == data.dtype else data.astype(dtype)
    return Tensor.from_numpy(data, dtype=dtype, device=device or default_device())


def empty(shape: Any, dtype: Any = np.float32, *, device: Device | None = None) -> Tensor:
    """A Tensor with unspecified contents (pooled memory is reused as is). numpy: `np.empty`."""
    return Tensor.empty(shape, dtype, device=device)


def zeros(shape: Any, dtype: Any = np.float32, *, device: Device | None = None) -> Tensor:
    """A Tensor of zeros. numpy: `np.zeros`."""
    return Tensor.zeros(shape, dtype, device=device)
