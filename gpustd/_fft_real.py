"""Real-signal FFTs (rfft / irfft) on top of the complex plans in _fft_plan.

Along the last axis with an even length n, a real row of n float32 values *is* a complex64
row of n/2 values (even samples real, odd samples imaginary), so the transform is an
n/2-point complex FFT plus one O(n) pass (shaders/fft/real.wgsl): half the work and memory
traffic of promoting to complex. Other axes and odd n take the general path: promote,
complex FFT, crop (rfft) or Hermitian extension, complex FFT, real part (irfft).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _fft_plan as plan
from ._tensor import Tensor

__all__ = ["forward", "inverse"]


def _half_twiddles(device: Any, n: int) -> Any:
    """exp(-2 pi i k / n) for k = 0..n/2, built in float64."""
    return plan.table(device, ("real", n),
                      lambda: np.exp(-2j * np.pi * np.arange(n // 2 + 1) / n))


def forward(t: Tensor, out: Tensor, n: int, axis: int, scale: float) -> None:
    """out = scale * rfft(t, n, axis): float32 (.., m, ..) -> complex64 (.., n//2 + 1, ..)."""
    batch, m, stride = plan.layout(t.shape, axis)
    device = t.device
    if stride == 1 and n % 2 == 0:
        h = n // 2
        signal = t.buffer
        if m != n:
            signal = plan.scratch(device, "real-signal", batch * n, np.float32)
            plan.dispatch("fft/resize_real", batch * n, t.buffer, signal, n_in=m, n_out=n,
                          stride=1, total=batch * n)
        packed = plan.scratch(device, "real-packed", batch * h)
        plan.transform(signal, packed, batch=batch, n=h, stride=1, sign=-1.0, scale=1.0)
        total = batch * (h + 1)
        plan.dispatch("fft/real", total, packed, _half_twiddles(device, n), out,
                      entry="rfft_post", h=h, m_in=h, total=total, scale=scale)
        return
    full = plan.scratch(device, "real-full", batch * n * stride)
    plan.complex_axis(t.buffer, t.dtype, t.shape, full, n, axis, -1.0, scale)
    plan.resize(full, out, batch, n, n // 2 + 1, stride)


def inverse(t: Tensor, out: Tensor, n: int, axis: int, scale: float) -> None:
    """out = irfft(t, n, axis) with `scale` the norm factor of an n-point inverse transform."""
    batch, m, stride = plan.layout(t.shape, axis)
    device = t.device
    spectrum = t.buffer
    if t.dtype == np.float32:  # numpy accepts a real spectrum: its imaginary parts are 0
        spectrum = plan.scratch(device, "real-spectrum", t.size)
        plan.dispatch("fft/promote", t.size, t.buffer, spectrum, n_in=m, n_out=m,
                      stride=stride, total=t.size)
    if stride == 1 and n % 2 == 0:
        h = n // 2
        packed = plan.scratch(device, "real-packed", batch * h)
        plan.dispatch("fft/real", batch * h, spectrum, _half_twiddles(device, n), packed,
                      entry="irfft_pre", h=h, m_in=m, total=batch * h, scale=1.0)
        # The h-point inverse of the packed spectrum is x itself: undo numpy's 1/n for 1/h.
        plan.transform(packed, out, batch=batch, n=h, stride=1, sign=1.0, scale=2.0 * scale)
        return
    total = batch * n * stride
    full = plan.scratch(device, "real-full", total)
    plan.dispatch("fft/hermitian", total, spectrum, full, m_in=m, n=n, stride=stride,
                  total=total)
    signal = plan.scratch(device, "real-signal-c", total)
    plan.transform(full, signal, batch=batch, n=n, stride=stride, sign=1.0, scale=scale)
    plan.dispatch("fft/real_part", total, signal, out, total=total)
