"""Tensor: a Buffer plus a shape (contiguous, C order)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from gpucore import Buffer, Device, Kernel, as_dtype, default_device, wgsl_scalar

__all__ = ["Tensor", "asarray", "empty", "zeros"]


def _normalize_shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    shape = tuple(map(int, shape))  # every op's result passes here: no Python-level loop
    if shape and min(shape) < 0:
        raise ValueError(f"negative dimension in shape {shape}")
    return shape


def _binary_operators(name: str) -> tuple[Callable[..., Any], ...]:
    """Tensor's `a OP b`, `b OP a` and `a OP= b` for the operator table's `name`."""
    def forward(self: Tensor, other: Any) -> Tensor:
        return _operator(name)(self, other)

    def reflected(self: Tensor, other: Any) -> Tensor:
        return _operator(name)(other, self)

    def inplace(self: Tensor, other: Any) -> Tensor:
        return _operator("inplace")(self, name, other)

    return forward, reflected, inplace


class Tensor:
    """An n-dimensional array in GPU memory: `buffer` viewed with `shape`.

    Contiguous and C-ordered; `reshape` shares the buffer. Indexing reads a copy (gpustd.
    indexing; integer arrays and boolean masks: gpustd.advanced_indexing); `x[key] = value`
    and the in-place operators (`x += y`) write into the buffer, so every Tensor sharing it
    sees the change. numpy equivalent: `np.ndarray`.
    """

    __slots__ = ("buffer", "shape")
    # Above ndarray's 0: where numpy or Dask pick the type of a mixed result, a Tensor wins.
    __array_priority__ = 10.0

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
        buffer: Buffer[Any] = Buffer(math.prod(shape), dtype, device=device)
        if cls is not Tensor:
            return cls(buffer, shape)
        tensor = object.__new__(cls)  # the buffer has the shape's length: nothing to check
        tensor.buffer, tensor.shape = buffer, shape
        return tensor

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
        buffer: Buffer[Any] = Buffer(data.size, dtype, device=device, read_only=read_only)
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

    @property
    def T(self) -> Tensor:
        """The axes reversed (a copy). numpy: `a.T`."""
        return _operator("permute")(self)

    @property
    def mT(self) -> Tensor:
        """The last two axes swapped (a copy). numpy: `a.mT`."""
        return _operator("matrix_transpose")(self)

    def transpose(self, *axes: Any) -> Tensor:
        """The axes reordered (a copy): none given reverses them; else a permutation, as one
        tuple or as arguments. numpy: `a.transpose(*axes)`."""
        if len(axes) == 1 and not isinstance(axes[0], (int, np.integer)):
            axes = axes[0]  # one tuple, or None
        return _operator("permute")(self, axes or None)

    def swapaxes(self, axis1: int, axis2: int) -> Tensor:
        """Two axes swapped (a copy). numpy: `a.swapaxes(axis1, axis2)`."""
        return _operator("swapaxes")(self, axis1, axis2)

    def squeeze(self, axis: Any = None) -> Tensor:
        """Same buffer without the length-1 axes `axis` (all of them when None).
        numpy: `a.squeeze(axis)`."""
        axes = range(self.ndim) if axis is None else (axis,) if isinstance(
            axis, (int, np.integer)) else axis
        if any(not -self.ndim <= int(a) < self.ndim for a in axes):
            raise ValueError(f"squeeze: axis {axis} is out of bounds for shape {self.shape}")
        drop = {int(a) % self.ndim for a in axes}
        if axis is not None and any(self.shape[a] != 1 for a in drop):
            raise ValueError(f"cannot squeeze axes {sorted(drop)} of shape {self.shape}: "
                             "only length-1 axes can be removed")
        return Tensor(self.buffer, [n for a, n in enumerate(self.shape)
                                    if a not in drop or n != 1])

    # Reductions as methods (Dask's aggregations call them on chunks): numpy's, through
    # __array_function__ below. numpy: `a.sum(axis)`, ...
    def sum(self, axis: Any = None, **kwargs: Any) -> Tensor:
        return np.sum(self, axis, **kwargs)  # type: ignore[no-any-return]

    def mean(self, axis: Any = None, **kwargs: Any) -> Tensor:
        return np.mean(self, axis, **kwargs)  # type: ignore[no-any-return]

    def max(self, axis: Any = None, **kwargs: Any) -> Tensor:
        return np.max(self, axis, **kwargs)  # type: ignore[no-any-return]

    def min(self, axis: Any = None, **kwargs: Any) -> Tensor:
        return np.min(self, axis, **kwargs)  # type: ignore[no-any-return]

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as its host copy; unpickled onto the default device of the process that
        # loads it (a Dask worker's own GPU).
        return (Tensor.from_numpy, (self.numpy(),))

    # -- operators and the numpy protocols (NEP 13 / NEP 18) ------------------------------
    # Their implementations are the op modules' functions, which import Tensor: so that
    # Tensor imports none of them, gpustd._numpy_api (above both) fills these tables. Each
    # binary operator comes with its reflected form and numpy's in-place one (`a += b`
    # writes into a's own buffer, which every Tensor sharing it sees).
    __add__, __radd__, __iadd__ = _binary_operators("add")
    __sub__, __rsub__, __isub__ = _binary_operators("subtract")
    __mul__, __rmul__, __imul__ = _binary_operators("multiply")
    __truediv__, __rtruediv__, __itruediv__ = _binary_operators("divide")
    __floordiv__, __rfloordiv__, __ifloordiv__ = _binary_operators("floor_divide")
    __mod__, __rmod__, __imod__ = _binary_operators("remainder")
    __pow__, __rpow__, __ipow__ = _binary_operators("power")
    __matmul__, __rmatmul__, __imatmul__ = _binary_operators("matmul")
    __and__, __rand__, __iand__ = _binary_operators("bitwise_and")
    __or__, __ror__, __ior__ = _binary_operators("bitwise_or")
    __xor__, __rxor__, __ixor__ = _binary_operators("bitwise_xor")
    __lshift__, __rlshift__, __ilshift__ = _binary_operators("left_shift")
    __rshift__, __rrshift__, __irshift__ = _binary_operators("right_shift")
    __divmod__, __rdivmod__ = _binary_operators("divmod")[:2]

    def __neg__(self) -> Tensor:
        return _operator("negative")(self)

    def __abs__(self) -> Tensor:
        return _operator("abs")(self)

    def __invert__(self) -> Tensor:
        return _operator("invert")(self)

    def __pos__(self) -> Tensor:
        return self.astype(self.dtype)  # numpy's +a is a copy

    # Comparisons are elementwise (uint32 0/1, gpustd's bool), so a Tensor is no dict key or
    # set member, as an ndarray is not: key such things by id(t), find one with `is`.
    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return _operator("equal")(self, other)

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return _operator("not_equal")(self, other)

    def __lt__(self, other: Any) -> Tensor:
        return _operator("less")(self, other)

    def __le__(self, other: Any) -> Tensor:
        return _operator("less_equal")(self, other)

    def __gt__(self, other: Any) -> Tensor:
        return _operator("greater")(self, other)

    def __ge__(self, other: Any) -> Tensor:
        return _operator("greater_equal")(self, other)

    __hash__ = None  # type: ignore[assignment]

    def __bool__(self) -> bool:
        """numpy's truth of an array: that of its one element (NaN is true); more or fewer
        elements raise ValueError. Reads the element back."""
        if self.size > 1:
            raise ValueError("The truth value of an array with more than one element is "
                             "ambiguous. Use a.any() or a.all()")
        if self.size == 0:
            raise ValueError("The truth value of an empty array is ambiguous. Use "
                             "`array.size > 0` to check that an array is not empty.")
        return bool(self.numpy().reshape(()))

    def __float__(self) -> float:
        return float(self._item())

    def __int__(self) -> int:
        return int(self._item())

    def _item(self) -> Any:
        if self.ndim:
            raise TypeError("only 0-dimensional arrays can be converted to Python scalars "
                            f"(this one has shape {self.shape}); index one element first")
        return self.numpy().item()

    def any(self, axis: Any = None, **kwargs: Any) -> Any:
        """numpy's `a.any(axis)`, computed on a host copy (what `bool(a)` asks for)."""
        return np.any(self, axis, **kwargs)

    def all(self, axis: Any = None, **kwargs: Any) -> Any:
        """numpy's `a.all(axis)`, computed on a host copy."""
        return np.all(self, axis, **kwargs)

    def __getitem__(self, key: Any) -> Tensor:
        return _operator("getitem")(self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        _operator("setitem")(self, key, value)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        if not all(issubclass(t, (Tensor, np.ndarray)) for t in types):
            return NotImplemented
        return _protocol(ARRAY_FUNCTIONS, func)(*args, **kwargs)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        out = kwargs.pop("out", None)
        if out is not None and (method != "__call__"
                                or not all(isinstance(o, Tensor) for o in out)):
            return NotImplemented  # numpy then says the ufunc is not supported with out=
        if method != "__call__":  # reduce, accumulate, outer, ...
            return _protocol({}, getattr(ufunc, method))(*inputs, **kwargs)
        result = _protocol(ARRAY_UFUNCS, ufunc)(*inputs, **kwargs)
        if out is None:
            return result
        # out=: numpy's in-place form (np.add(a, b, out=a)), into each out's own buffer
        results = result if isinstance(result, tuple) else (result,)
        stored = tuple(_operator("store")(o, r, ufunc.__name__) for o, r in zip(out, results))
        return stored if isinstance(result, tuple) else stored[0]


OPERATORS: dict[str, Callable[..., Any]] = {}
ARRAY_FUNCTIONS: dict[Any, Callable[..., Any]] = {}  # numpy function -> gpustd's
ARRAY_UFUNCS: dict[Any, Callable[..., Any]] = {}  # numpy ufunc -> gpustd's
# What runs a numpy function gpustd lacks (gpustd._numpy_api.on_host: numpy on host copies)
FALLBACK: Callable[[Any], Callable[..., Any]] | None = None


def _operator(name: str) -> Callable[..., Tensor]:
    found = OPERATORS.get(name)
    if found is None:
        raise TypeError(f"gpustd.Tensor has no operator {name!r}: import gpustd (its "
                        "_numpy_api module fills the operator table)")
    return found


def _protocol(table: dict[Any, Callable[..., Any]], func: Any) -> Callable[..., Any]:
    found = table.get(func)
    if found is not None:
        return found
    if FALLBACK is None:
        raise TypeError(f"gpustd.Tensor cannot run numpy's {_name(func)} yet: import gpustd "
                        "(its _numpy_api module fills the tables)")
    return FALLBACK(func)


def _name(key: Any) -> str:
    return str(getattr(key, "__name__", key))


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
