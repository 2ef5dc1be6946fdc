"""Reductions along axes: sum, mean, max, min, argmax, argmin, var, std, logsumexp.

Kernels in shaders/reduction/ (reduce.wgsl, argreduce.wgsl); the multi-pass driver is
gpustd/_reduce.py. `axis` is an int, a tuple of ints or None (all axes), negative counting
from the end, as in numpy. Floats accumulate in f32 (float16 input included, which is
returned as float16); integer sums wrap in their own dtype. An axis=None result is a 0-d
Tensor. Empty reductions follow numpy: sums are 0, means NaN, max/min/arg* raise. A NaN
wins max/min (argmax/argmin give its first index), as in numpy.
"""

from __future__ import annotations

import builtins
import math
from typing import Any

import numpy as np

from . import _reduce as r
from ._broadcast import upload
from ._tensor import Tensor
from .unary import _tensor

__all__ = ["argmax", "argmin", "logsumexp", "max", "mean", "min", "std", "sum", "var"]


def _fill(shape: tuple[int, ...], value: float, dtype: np.dtype, device: Any) -> Tensor:
    if value == 0:
        return Tensor.zeros(shape, dtype, device=device)
    return upload(np.full(shape, value, dtype), dtype, device)


def _floating(x: Tensor) -> Tensor:
    # numpy computes means, variances and logsumexp of integers in floating point.
    return x if x.dtype.kind == "f" else x.astype(np.float32)


def _simple(x: Any, axis: Any, keepdims: bool, op: int, name: str, *,
            mean: bool = False) -> Tensor:
    """sum / mean / max / min: decomposable, so non-adjacent axes reduce run by run."""
    x = _tensor(x)
    if mean:
        x = _floating(x)
    axes = r.normalize_axes(axis, x.ndim)
    out_shape = r.kept_shape(x.shape, axes, keepdims)
    length = math.prod(x.shape[a] for a in axes)
    if math.prod(out_shape) == 0:
        return Tensor.empty(out_shape, x.dtype, device=x.device)
    if length == 0:
        if op != r.SUM:
            raise ValueError(f"zero-size reduction of {name} over axes {axes} of shape "
                             f"{x.shape}: it has no identity; pass a non-empty tensor")
        return _fill(out_shape, math.nan if mean else 0, x.dtype, x.device)
    shape, current = x.shape, x
    runs = r.axis_groups(axes) or [(0, 0)]
    for k, (first, stop) in enumerate(runs):
        last = k == len(runs) - 1
        group = r.view(shape, first, stop)
        current = r.reduce(current, group, op=op, post=r.POST_SCALE if mean else r.POST_NONE,
                           scale=1.0 / group[1],
                           out_dtype=x.dtype if last else r.accumulator(x.dtype))
        shape = shape[:first] + (1,) * (stop - first) + shape[stop:]
    return current.reshape(out_shape)


def _single_run(x: Tensor, axis: Any, name: str) -> tuple[tuple[int, ...], r.View]:
    axes = r.normalize_axes(axis, x.ndim)
    runs = r.axis_groups(axes)
    if len(runs) > 1:
        raise ValueError(f"{name} over non-adjacent axes {axes} is not supported; reduce "
                         "adjacent axes (or transpose them next to each other first)")
    first, stop = runs[0] if runs else (0, 0)
    return axes, r.view(x.shape, first, stop)


def sum(x: Any, axis: Any = None, *, keepdims: bool = False) -> Tensor:
    """Sum over `axis`; same dtype as x (float16 accumulates in f32). numpy: `np.sum`."""
    return _simple(x, axis, keepdims, r.SUM, "sum")


def mean(x: Any, axis: Any = None, *, keepdims: bool = False) -> Tensor:
    """Arithmetic mean over `axis`; integers give float32. numpy: `np.mean`."""
    return _simple(x, axis, keepdims, r.SUM, "mean", mean=True)


def max(x: Any, axis: Any = None, *, keepdims: bool = False) -> Tensor:
    """Largest element over `axis`; ValueError when empty. numpy: `np.max`."""
    return _simple(x, axis, keepdims, r.MAX, "max")


def min(x: Any, axis: Any = None, *, keepdims: bool = False) -> Tensor:
    """Smallest element over `axis`; ValueError when empty. numpy: `np.min`."""
    return _simple(x, axis, keepdims, r.MIN, "min")


def _arg(x: Any, axis: int | None, keepdims: bool, op: int, name: str) -> Tensor:
    x = _tensor(x)
    if axis is not None and not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name} takes an int axis or None, got {axis!r}")
    if axis is None:
        axes, shape = tuple(range(x.ndim)), (1, x.size, 1)
    else:
        axes, shape = _single_run(x, axis, name)
    if shape[1] == 0:
        raise ValueError(f"attempt to get {name} of an empty sequence (shape {x.shape})")
    out_shape = r.kept_shape(x.shape, axes, keepdims)
    if math.prod(out_shape) == 0:
        return Tensor.empty(out_shape, np.int32, device=x.device)
    return r.argreduce(x, shape, op=op).reshape(out_shape)


def argmax(x: Any, axis: int | None = None, *, keepdims: bool = False) -> Tensor:
    """Index of the largest element along `axis` (None: of the flattened tensor), first
    one on ties, as int32. numpy: `np.argmax`."""
    return _arg(x, axis, keepdims, 0, "argmax")


def argmin(x: Any, axis: int | None = None, *, keepdims: bool = False) -> Tensor:
    """Index of the smallest element along `axis` (None: flattened), first one on ties,
    as int32. numpy: `np.argmin`."""
    return _arg(x, axis, keepdims, 1, "argmin")


def _moment(x: Any, axis: Any, ddof: float, keepdims: bool, post: int, name: str) -> Tensor:
    # Two passes (mean, then the mean squared deviation) instead of E[x^2] - E[x]^2, which
    # cancels catastrophically when the mean is large against the spread.
    x = _floating(_tensor(x))
    axes, shape = _single_run(x, axis, name)
    out_shape = r.kept_shape(x.shape, axes, keepdims)
    if math.prod(out_shape) == 0:
        return Tensor.empty(out_shape, x.dtype, device=x.device)
    if shape[1] == 0:
        return _fill(out_shape, math.nan, x.dtype, x.device)
    mu = r.reduce(x, shape, op=r.SUM, post=r.POST_SCALE, scale=1.0 / shape[1],
                  out_dtype=np.float32)
    divisor = builtins.max(shape[1] - ddof, 0)
    out = r.reduce(x, shape, op=r.SUM, pre=r.PRE_SQUARED_DEVIATION, post=post, center=mu,
                   scale=1.0 / divisor if divisor else math.inf)
    return out.reshape(out_shape)


def var(x: Any, axis: Any = None, *, ddof: float = 0, keepdims: bool = False) -> Tensor:
    """Variance over adjacent axes `axis`, dividing by N - ddof (two-pass, f32
    accumulation; integers give float32). numpy: `np.var`."""
    return _moment(x, axis, ddof, keepdims, r.POST_SCALE, "var")


def std(x: Any, axis: Any = None, *, ddof: float = 0, keepdims: bool = False) -> Tensor:
    """Standard deviation, sqrt(var(x, axis, ddof=ddof)). numpy: `np.std`."""
    return _moment(x, axis, ddof, keepdims, r.POST_SQRT_SCALE, "std")


def logsumexp(x: Any, axis: Any = None, *, keepdims: bool = False) -> Tensor:
    """log(sum(exp(x))) over adjacent axes `axis`, computed as m + log(sum(exp(x - m)))
    with m the max, so large inputs do not overflow (finite inputs; -inf for an empty
    axis). scipy: `scipy.special.logsumexp`."""
    x = _floating(_tensor(x))
    axes, shape = _single_run(x, axis, "logsumexp")
    out_shape = r.kept_shape(x.shape, axes, keepdims)
    if math.prod(out_shape) == 0:
        return Tensor.empty(out_shape, x.dtype, device=x.device)
    if shape[1] == 0:
        return _fill(out_shape, -math.inf, x.dtype, x.device)
    peak = r.reduce(x, shape, op=r.MAX, out_dtype=np.float32)
    out = r.reduce(x, shape, op=r.SUM, pre=r.PRE_EXP, post=r.POST_LOG_ADD, center=peak)
    return out.reshape(out_shape)
