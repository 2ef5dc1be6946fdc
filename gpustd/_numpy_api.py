"""Tensor's operators and numpy protocols: numpy's names mapped to gpustd's functions.

numpy calls `Tensor.__array_function__` (NEP 18) for `np.concatenate(tensors)`,
`np.matmul`, `np.sum`, `np.fft.fft`, ... and `Tensor.__array_ufunc__` (NEP 13) for `np.add`,
`np.exp`, ... on Tensors; Tensor looks the implementation up in the tables of gpustd._tensor,
which this module fills (it sits above both Tensor and the op modules, so neither imports the
other's way round). This is what Dask calls on its chunks (gpustd.dask).

A numpy function or ufunc gpustd does not have runs in numpy on host copies of the Tensors,
as it did before Tensor spoke these protocols, and returns what numpy returns.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from . import (
    _inplace,
    _tensor,
    advanced_indexing,
    bitwise,
    elementwise,
    fft,
    gather,
    reduction,
    scan,
    shape,
    unary,
)
from ._matmul import matmul
from ._tensor import Tensor, asarray

__all__ = ["tensordot"]


def _host(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.numpy()
    if isinstance(value, (list, tuple)):
        return type(value)(_host(v) for v in value)
    return value


def on_host(func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` (a numpy function or ufunc) applied to host copies of its Tensor arguments."""
    run = getattr(func, "_implementation", func)  # past __array_function__, no recursion
    return lambda *args, **kwargs: run(*_host(args), **{k: _host(v) for k, v in kwargs.items()})


def _on_one_device(values: tuple[Any, ...]) -> list[Any]:
    """Arrays among `values` uploaded to the first Tensor's device (numpy mixes freely)."""
    device = next((v.device for v in values if isinstance(v, Tensor)), None)
    return [asarray(v, device=device) if isinstance(v, (np.ndarray, list)) else v
            for v in values]


def tensordot(a: Any, b: Any, axes: Any = 2) -> Tensor:
    """Sum of products over `axes` of a and b, as one matrix product. numpy: `np.tensordot`."""
    a, b = _on_one_device((a, b))
    if isinstance(axes, (int, np.integer)):
        left, right = list(range(a.ndim - int(axes), a.ndim)), list(range(int(axes)))
    else:
        left, right = ([axes[i]] if isinstance(axes[i], (int, np.integer)) else list(axes[i])
                       for i in (0, 1))
    left, right = [i % a.ndim for i in left], [i % b.ndim for i in right]
    if [a.shape[i] for i in left] != [b.shape[i] for i in right]:
        raise ValueError(f"tensordot: contracted axes of shapes {a.shape} {left} and "
                         f"{b.shape} {right} differ in length")
    free_a = [i for i in range(a.ndim) if i not in left]
    free_b = [i for i in range(b.ndim) if i not in right]
    inner = math.prod(a.shape[i] for i in left)
    rows, cols = [a.shape[i] for i in free_a], [b.shape[i] for i in free_b]
    # Sizes spelled out, not -1: a contracted length of 0 leaves -1 undetermined.
    lhs = shape.permute(a, free_a + left).reshape(math.prod(rows), inner)
    rhs = shape.permute(b, right + free_b).reshape(inner, math.prod(cols))
    return matmul(lhs, rhs).reshape(rows + cols)


def _equality(op: Callable[..., Tensor], unequal: bool) -> Callable[..., Tensor]:
    """`a == b` / `a != b` (a is the Tensor): elementwise, and as numpy's operators an operand
    that is no number at all (None, a string, an object) equals no element."""
    def call(a: Tensor, b: Any) -> Tensor:
        if isinstance(b, Tensor) or np.asarray(b).dtype.kind in "biufc":
            return op(a, b)
        return asarray(np.full(a.shape, unequal, np.uint32), device=a.device)
    return call


def _reduction(op: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """np.sum & co. as numpy calls them: a dtype, an out or a where gpustd cannot honour
    raises rather than being ignored."""
    def call(x: Any, axis: Any = None, dtype: Any = None, out: Any = None,
             keepdims: bool = False, **rest: Any) -> Tensor:
        if out is not None or rest:
            raise TypeError(f"gpustd {op.__name__} takes no out= or {sorted(rest)}")
        result = op(x, axis, keepdims=bool(keepdims))
        return result if dtype is None or np.dtype(dtype) == result.dtype else (
            result.astype(dtype))
    return call


def _ufunc(op: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """A ufunc as numpy calls it. Host operands stay as they are: the elementwise ops take
    them in the Tensor's dtype (np.ones(3) * int_tensor is float32, as int_tensor * np.ones(3))."""
    def call(*inputs: Any, dtype: Any = None, **rest: Any) -> Tensor:
        if rest:
            raise TypeError(f"gpustd {op.__name__} takes no {sorted(rest)}")
        result = op(*inputs)
        return result if dtype is None or np.dtype(dtype) == result.dtype else (
            result.astype(dtype))
    return call


def _matmul(a: Any, b: Any) -> Tensor:
    return matmul(*_on_one_device((a, b)))


def _transpose(x: Any, axes: Any = None) -> Tensor:
    return shape.permute(x, axes)


def _reshape(x: Any, newshape: Any = None, order: str = "C", **kwargs: Any) -> Tensor:
    if order != "C":
        raise ValueError("gpustd tensors are C-ordered: reshape takes order='C' only")
    return asarray(x).reshape(kwargs.get("shape", newshape))


def _take(x: Any, indices: Any, axis: Any = None, out: Any = None, mode: str = "raise") -> Tensor:
    if out is not None or mode != "raise":
        raise TypeError("gpustd take raises IndexError for indices out of range (numpy's "
                        "mode='raise') and takes no out=")
    return gather.take(x, indices, axis)


def _squeeze(x: Any, axis: Any = None) -> Tensor:
    return asarray(x).squeeze(axis)


_tensor.OPERATORS.update(
    add=elementwise.add, subtract=elementwise.subtract, multiply=elementwise.multiply,
    divide=elementwise.divide, power=elementwise.power, negative=unary.negative,
    floor_divide=elementwise.floor_divide, remainder=elementwise.remainder,
    divmod=elementwise.divmod, bitwise_and=bitwise.bitwise_and, bitwise_or=bitwise.bitwise_or,
    bitwise_xor=bitwise.bitwise_xor, left_shift=bitwise.left_shift,
    right_shift=bitwise.right_shift, invert=bitwise.invert, abs=unary.abs,
    getitem=advanced_indexing.getitem, setitem=advanced_indexing.setitem, matmul=_matmul,
    inplace=_inplace.inplace, store=_inplace.store, permute=shape.permute, swapaxes=shape.swapaxes,
    matrix_transpose=shape.matrix_transpose, equal=_equality(elementwise.equal, False),
    not_equal=_equality(elementwise.not_equal, True), less=elementwise.less,
    less_equal=elementwise.less_equal, greater=elementwise.greater,
    greater_equal=elementwise.greater_equal)

_tensor.ARRAY_UFUNCS.update({
    np.add: elementwise.add, np.subtract: elementwise.subtract,
    np.multiply: elementwise.multiply, np.true_divide: elementwise.divide,
    np.power: elementwise.power, np.maximum: elementwise.maximum,
    np.floor_divide: elementwise.floor_divide, np.remainder: elementwise.remainder,
    np.bitwise_and: bitwise.bitwise_and, np.bitwise_or: bitwise.bitwise_or,
    np.bitwise_xor: bitwise.bitwise_xor, np.invert: bitwise.invert,
    np.left_shift: bitwise.left_shift, np.right_shift: bitwise.right_shift,
    np.logical_and: bitwise.logical_and, np.logical_or: bitwise.logical_or,
    np.logical_xor: bitwise.logical_xor, np.logical_not: bitwise.logical_not,
    np.minimum: elementwise.minimum, np.equal: elementwise.equal,
    np.not_equal: elementwise.not_equal, np.less: elementwise.less,
    np.less_equal: elementwise.less_equal, np.greater: elementwise.greater,
    np.greater_equal: elementwise.greater_equal, np.negative: unary.negative,
    np.absolute: unary.abs,
    np.exp: unary.exp, np.log: unary.log, np.sqrt: unary.sqrt, np.tanh: unary.tanh,
    np.matmul: _matmul})
_tensor.ARRAY_UFUNCS.update({k: _ufunc(v) for k, v in _tensor.ARRAY_UFUNCS.items()})
_tensor.ARRAY_UFUNCS[np.divmod] = elementwise.divmod  # two results: no dtype= to apply

_tensor.ARRAY_FUNCTIONS.update({
    np.concatenate: shape.concatenate, np.tensordot: tensordot, np.transpose: _transpose,
    np.swapaxes: shape.swapaxes, np.matrix_transpose: shape.matrix_transpose,
    np.reshape: _reshape, np.squeeze: _squeeze, np.take: _take,
    np.flatnonzero: scan.flatnonzero, np.where: elementwise.where,
    np.sum: _reduction(reduction.sum), np.mean: _reduction(reduction.mean),
    np.max: _reduction(reduction.max), np.amax: _reduction(reduction.max),
    np.min: _reduction(reduction.min), np.amin: _reduction(reduction.min),
    np.fft.fft: fft.fft, np.fft.ifft: fft.ifft, np.fft.fft2: fft.fft2,
    np.fft.ifft2: fft.ifft2, np.fft.fftn: fft.fftn, np.fft.ifftn: fft.ifftn,
    np.fft.rfft: fft.rfft, np.fft.irfft: fft.irfft})
_tensor.FALLBACK = on_host
