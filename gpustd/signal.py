"""1-D convolution and correlation with numpy's modes, direct or through FFTs.

`convolve(a, v, mode="full")` and `correlate(a, v, mode="valid")` match `np.convolve` and
`np.correlate` on float32 data (modes "full", "same", "valid"), including numpy's argument
swap when the second signal is the longer one. Both reduce to one core,
out[i] = sum_j a[i + offset + j] * w[j], computed either

- directly (shaders/signal/correlate.wgsl: taps and samples staged in workgroup memory), or
- by FFT: the full linear convolution as irfft(rfft(a, P) * rfft(u, P)) with P the power of
  two >= n + m - 1, then the mode's window (shaders/signal/extract.wgsl).

`method="auto"` picks by a cost estimate: direct costs count * m multiply-adds, the FFT path
about FFT_COST * P * log2(P) plus a fixed FFT_OVERHEAD (its dozen dispatches). Direct wins
for short kernels (m <= DIRECT_TAPS always) and small problems; the FFT path for long
kernels on long signals, e.g. m = 1000 taps on 10^6 samples. Pass method="direct" or "fft"
to force one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device, Kernel, default_device

from . import _fft_plan as plan
from ._tensor import Tensor
from .fft import irfft, rfft

__all__ = ["convolve", "correlate"]

DIRECT_TAPS = 64  # kernels this short always run directly
FFT_COST = 32  # multiply-adds of direct work one FFT point-stage is worth
FFT_OVERHEAD = 1 << 26  # multiply-adds of direct work the FFT path's dispatches are worth
_MODES = ("full", "same", "valid")
_METHODS = ("auto", "direct", "fft")


def _kernel(name: str) -> Kernel:
    return Kernel.cached(name)


def _signal(x: Any, name: str, device: Device | None) -> Tensor:
    if isinstance(x, Tensor):
        t = x
    else:
        array = np.asarray(x)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be real numbers (float32), got {array.dtype}")
        t = Tensor.from_numpy(array, dtype=np.float32, device=device or default_device())
    if t.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {t.dtype}; convert with .astype first")
    if t.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {t.shape}")
    if t.size == 0:
        raise ValueError(f"{name} cannot be empty")
    return t


def _window(mode: str, n: int, m: int) -> tuple[int, int]:
    """(count, offset) of `mode` for out[i] = sum_j a[i + offset + j] w[j], n >= m."""
    if mode not in _MODES:
        raise ValueError(f"mode={mode!r} is not one of 'full', 'same', 'valid'")
    return {"full": (n + m - 1, 1 - m), "same": (n, -(m // 2)), "valid": (n - m + 1, 0)}[mode]


def _choose(method: str, count: int, n: int, m: int) -> str:
    if method not in _METHODS:
        raise ValueError(f"method={method!r} is not one of 'auto', 'direct', 'fft'")
    if method != "auto":
        return method
    p = 1 << (n + m - 2).bit_length()
    fft_cost = FFT_OVERHEAD + FFT_COST * p * max(p.bit_length() - 1, 1)
    return "direct" if m <= DIRECT_TAPS or count * m <= fft_cost else "fft"


def _core(a: Tensor, w: Tensor, mode: str, method: str, *, flip_w: bool,
          flip_out: bool) -> Tensor:
    """out = sum_j a[i + offset + j] * w'[j] in `mode` (len(a) >= len(w)); w' is w reversed
    when flip_w; the output is reversed when flip_out."""
    if a.device is not w.device:
        raise ValueError("both signals must be on the same device; move one with .to(device)")
    n, m = a.size, w.size
    count, offset = _window(mode, n, m)
    out = Tensor.empty((count,), np.float32, device=a.device)
    if _choose(method, count, n, m) == "direct":
        k = _kernel("signal/correlate")
        groups = -(-count // (k.workgroup_size[0] * 4))
        k.dispatch(groups, a, w, out, n=n, m=m, count=count, offset=offset,
                   flip_w=int(flip_w), flip_out=int(flip_out))
        return out
    # Full linear convolution a * u with u = w' reversed: out[i] = full[i + offset + m - 1].
    p = 1 << (n + m - 2).bit_length()
    u = w
    if not flip_w:
        u = Tensor.empty((m,), np.float32, device=a.device)
        flip = plan.kernel("fft/resize_real", FLIP=1.0)
        flip.dispatch(flip.groups_for(m), w, u, n_in=m, n_out=m, stride=1, total=m)
    spectrum = rfft(a, p)
    product = Tensor.empty(spectrum.shape, np.complex64, device=a.device)
    plan.resize(spectrum, product, 1, p // 2 + 1, p // 2 + 1, 1, w=rfft(u, p))
    full = irfft(product, p)
    k = _kernel("signal/extract")
    k.dispatch(k.groups_for(count), full, out, start=offset + m - 1, count=count,
               flip=int(flip_out))
    return out


def convolve(a: Any, v: Any, mode: str = "full", *, method: str = "auto",
             device: Device | None = None) -> Tensor:
    """Discrete linear convolution of two 1-D float32 signals. numpy: `np.convolve`.

    a: (n,), v: (m,) Tensors or array-likes (copied to `device`). mode: "full" (n + m - 1
    points), "same" (max(n, m)) or "valid" (max(n, m) - min(n, m) + 1). method: "auto",
    "direct" or "fft" (see the module docstring). Returns a float32 Tensor.
    """
    a, v = _signal(a, "a", device), _signal(v, "v", device)
    if v.size > a.size:
        a, v = v, a
    return _core(a, v, mode, method, flip_w=True, flip_out=False)


def correlate(a: Any, v: Any, mode: str = "valid", *, method: str = "auto",
              device: Device | None = None) -> Tensor:
    """Cross-correlation c[k] = sum_n a[n + k] * v[n] of two 1-D float32 signals.

    numpy: `np.correlate` (same modes as `convolve`, default "valid"). When v is longer than
    a, numpy correlates v with a and reverses the result; so does this. Real data only, so
    numpy's conjugation of v does not arise. Returns a float32 Tensor.
    """
    a, v = _signal(a, "a", device), _signal(v, "v", device)
    if v.size > a.size:
        return _core(v, a, mode, method, flip_w=False, flip_out=True)
    return _core(a, v, mode, method, flip_w=False, flip_out=False)
