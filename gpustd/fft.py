"""Discrete Fourier transforms with numpy.fft's names and semantics.

`fft`, `ifft`, `rfft`, `irfft`, `fft2`, `ifft2`, `fftn`, `ifftn` take a Tensor or anything
numpy takes and return a Tensor: complex64 (real input is promoted) or float32 for `irfft`;
`out=` (as in numpy 2) writes into an existing Tensor instead of allocating one.
Any length works: powers of two run as Stockham passes in workgroup memory, other lengths
through Bluestein's chirp-z transform (about 3x a power-of-two FFT of >= 2n points).
Any axis is transformed where it lies (strided access, no transposes); the last axis is
fastest. `norm` is numpy's: "backward" (default: ifft scales by 1/n), "ortho", "forward".
Twiddle factors are computed in float64 on the host and stored as float32, so the relative
error against a float64 FFT stays near 1e-7 * log2(n).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpucore import Device, default_device

from . import _fft_plan as plan
from . import _fft_real as _real
from ._tensor import Tensor

__all__ = ["fft", "fft2", "fftn", "ifft", "ifft2", "ifftn", "irfft", "rfft"]

_NORMS = (None, "backward", "ortho", "forward")
_F32, _C64 = np.dtype(np.float32), np.dtype(np.complex64)


def _as_tensor(a: Any, device: Device | None) -> Tensor:
    if isinstance(a, Tensor):
        t = a
    else:
        array = np.asarray(a)
        if array.dtype.kind not in "biufc":
            raise TypeError(f"cannot transform an array of {array.dtype}; pass numbers")
        if array.ndim == 0:
            raise ValueError("cannot transform a 0-d array; reshape it to (1,) first")
        dtype = np.complex64 if array.dtype.kind == "c" else np.float32
        t = Tensor.from_numpy(array, dtype=dtype, device=device or default_device())
    if t.dtype not in (_F32, _C64):
        raise TypeError(f"FFTs take float32 or complex64 tensors, got {t.dtype}; "
                        "convert with .astype(np.float32) first")
    if t.ndim == 0:
        raise ValueError("cannot transform a 0-d tensor; reshape it to (1,) first")
    return t


def _axis(axis: int, ndim: int) -> int:
    if not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis!r} is out of range for a {ndim}-d tensor")
    return int(axis) % ndim


def _points(n: Any, default: int) -> int:
    n = default if n is None else n
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"invalid number of FFT data points ({n}); need an integer >= 1")
    return int(n)


def _scale(norm: str | None, n: int, inverse: bool) -> float:
    if norm not in _NORMS:
        raise ValueError(f"norm={norm!r} is not one of 'backward', 'ortho', 'forward'")
    if norm == "ortho":
        return 1.0 / math.sqrt(n)
    return 1.0 / n if (norm == "forward") != inverse else 1.0


def _resized(shape: tuple[int, ...], axis: int, n: int) -> tuple[int, ...]:
    return (*shape[:axis], n, *shape[axis + 1 :])


def _output(out: Tensor | None, shape: tuple[int, ...], dtype: Any, t: Tensor) -> Tensor:
    """`out` checked against the result's shape, dtype and device, or a new Tensor."""
    if out is None:
        return Tensor.empty(shape, dtype, device=t.device)
    if not isinstance(out, Tensor):
        raise TypeError(f"out must be a Tensor, got {type(out).__name__}")
    if out.shape != shape or out.dtype != np.dtype(dtype):
        raise ValueError(f"out has shape {out.shape} and dtype {out.dtype}; this transform "
                         f"returns shape {shape} and dtype {np.dtype(dtype)}")
    if out.device is not t.device:
        raise ValueError("out is on another device than the input; allocate it on the same one")
    if out.buffer is t.buffer:
        raise ValueError("out may not be the input itself: the transform is out of place")
    return out


def _c2c(a: Any, n: Any, axis: int, norm: str | None, device: Device | None,
         out: Tensor | None, inverse: bool) -> Tensor:
    t = _as_tensor(a, device)
    axis = _axis(axis, t.ndim)
    n = _points(n, t.shape[axis])
    scale = _scale(norm, n, inverse)
    out = _output(out, _resized(t.shape, axis, n), np.complex64, t)
    if out.size:
        with plan.lock:
            plan.complex_axis(t.buffer, t.dtype, t.shape, out, n, axis,
                              1.0 if inverse else -1.0, scale)
    return out


def fft(a: Any, n: int | None = None, axis: int = -1, norm: str | None = None, *,
        device: Device | None = None, out: Tensor | None = None) -> Tensor:
    """1-D discrete Fourier transform along `axis`. numpy: `np.fft.fft`.

    a: Tensor (float32 or complex64) or array-like (copied to `device`, default device).
    n: points; the axis is cropped or zero-padded to it (default: its length).
    Returns a complex64 Tensor with the axis of length n.
    """
    return _c2c(a, n, axis, norm, device, out, inverse=False)


def ifft(a: Any, n: int | None = None, axis: int = -1, norm: str | None = None, *,
         device: Device | None = None, out: Tensor | None = None) -> Tensor:
    """1-D inverse discrete Fourier transform (scaled by 1/n by default). numpy: `np.fft.ifft`.

    Arguments and result as for `fft`.
    """
    return _c2c(a, n, axis, norm, device, out, inverse=True)


def _cnd(a: Any, s: Sequence[int] | None, axes: Sequence[int] | None, norm: str | None,
         device: Device | None, out: Tensor | None, inverse: bool) -> Tensor:
    t = _as_tensor(a, device)
    if axes is None:
        axes = range(-len(s), 0) if s is not None else range(t.ndim)
    axes = [_axis(ax, t.ndim) for ax in axes]
    if s is None:
        s = [t.shape[ax] for ax in axes]
    if len(s) != len(axes):
        raise ValueError(f"s has {len(s)} entries but axes has {len(axes)}; give one per axis")
    sizes = [_points(n, t.shape[ax]) for n, ax in zip(s, axes)]
    shape = t.shape
    for n, ax in zip(sizes, axes):
        shape = _resized(shape, ax, n)
    if not axes:
        raise ValueError("axes is empty; name at least one axis to transform")
    scale = math.prod(_scale(norm, n, inverse) for n in sizes)
    out = _output(out, shape, np.complex64, t)
    if not out.size:
        return out
    sign = 1.0 if inverse else -1.0
    with plan.lock:
        # numpy transforms the last listed axis first; crops and pads commute with the rest.
        steps = list(zip(sizes, axes))[::-1]
        src, dtype, current = t.buffer, t.dtype, t.shape
        for i, (n, ax) in enumerate(steps):
            last = i == len(steps) - 1
            after = _resized(current, ax, n)
            dst = out.buffer if last else plan.scratch(t.device, f"nd{i % 2}", math.prod(after))
            plan.complex_axis(src, dtype, current, dst, n, ax, sign, scale if last else 1.0)
            src, dtype, current = dst, _C64, after
    return out


def fftn(a: Any, s: Sequence[int] | None = None, axes: Sequence[int] | None = None,
         norm: str | None = None, *, device: Device | None = None,
         out: Tensor | None = None) -> Tensor:
    """N-D discrete Fourier transform over `axes` (default: all, or the last len(s)).

    s: points per axis (crop or zero-pad). Returns complex64. numpy: `np.fft.fftn`.
    """
    return _cnd(a, s, axes, norm, device, out, inverse=False)


def ifftn(a: Any, s: Sequence[int] | None = None, axes: Sequence[int] | None = None,
          norm: str | None = None, *, device: Device | None = None,
          out: Tensor | None = None) -> Tensor:
    """N-D inverse discrete Fourier transform; arguments as `fftn`. numpy: `np.fft.ifftn`."""
    return _cnd(a, s, axes, norm, device, out, inverse=True)


def fft2(a: Any, s: Sequence[int] | None = None, axes: Sequence[int] = (-2, -1),
         norm: str | None = None, *, device: Device | None = None,
         out: Tensor | None = None) -> Tensor:
    """2-D discrete Fourier transform over the last two axes. numpy: `np.fft.fft2`.

    a: (..., rows, cols) float32/complex64 Tensor or array-like; returns complex64.
    """
    return _cnd(a, s, axes, norm, device, out, inverse=False)


def ifft2(a: Any, s: Sequence[int] | None = None, axes: Sequence[int] = (-2, -1),
          norm: str | None = None, *, device: Device | None = None,
          out: Tensor | None = None) -> Tensor:
    """2-D inverse discrete Fourier transform; arguments as `fft2`. numpy: `np.fft.ifft2`."""
    return _cnd(a, s, axes, norm, device, out, inverse=True)


def rfft(a: Any, n: int | None = None, axis: int = -1, norm: str | None = None, *,
         device: Device | None = None, out: Tensor | None = None) -> Tensor:
    """Discrete Fourier transform of a real signal: the n // 2 + 1 non-negative frequencies.

    a: float32 Tensor or real array-like; n: points (crop or zero-pad the axis).
    Returns complex64 with the axis of length n // 2 + 1. numpy: `np.fft.rfft`.
    Along the last axis with even n this is an n/2-point complex FFT plus one pass.
    """
    t = _as_tensor(a, device)
    if t.dtype != _F32:
        raise TypeError("rfft takes real (float32) input; use fft for complex data")
    axis = _axis(axis, t.ndim)
    n = _points(n, t.shape[axis])
    out = _output(out, _resized(t.shape, axis, n // 2 + 1), np.complex64, t)
    if out.size:
        with plan.lock:
            _real.forward(t, out, n, axis, _scale(norm, n, inverse=False))
    return out


def irfft(a: Any, n: int | None = None, axis: int = -1, norm: str | None = None, *,
          device: Device | None = None, out: Tensor | None = None) -> Tensor:
    """Inverse of `rfft`: the real signal whose non-negative frequencies `a` holds.

    a: complex64 Tensor or array-like (the Hermitian half spectrum); n: output points
    (default 2 * (m - 1) for an axis of m; the input is cropped or zero-padded to n // 2 + 1).
    The imaginary parts of the zero and Nyquist frequencies are ignored, as numpy does.
    Returns float32 with the axis of length n. numpy: `np.fft.irfft`.
    """
    t = _as_tensor(a, device)
    axis = _axis(axis, t.ndim)
    n = _points(n, 2 * (t.shape[axis] - 1))
    out = _output(out, _resized(t.shape, axis, n), np.float32, t)
    if out.size:
        with plan.lock:
            _real.inverse(t, out, n, axis, _scale(norm, n, inverse=True))
    return out
