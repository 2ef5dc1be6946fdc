"""Elementwise math of one Tensor; kernels in shaders/elementwise/unary.wgsl (floats, f16
widened to f32 for the math) and unary_int.wgsl (abs, negative, clip on integers, and
gpustd.bitwise's invert).

Large |x| is safe throughout: tanh, sigmoid, silu and gelu are written so that no
intermediate overflows (no NaN from inf/inf), whatever the driver's exp and tanh do there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import wgsl_scalar

from ._broadcast import cached_kernel, upload
from ._tensor import Tensor

__all__ = ["abs", "clip", "exp", "gelu", "log", "negative", "rsqrt", "sigmoid", "silu",
           "sqrt", "tanh"]

_OPS = {"exp": 0, "log": 1, "sqrt": 2, "rsqrt": 3, "tanh": 4, "sigmoid": 5, "silu": 6,
        "gelu": 7, "gelu_tanh": 8, "clip": 9, "abs": 10, "negative": 11}
_INT_OPS = {"clip": 0, "abs": 1, "negative": 2, "invert": 3}  # invert: gpustd.bitwise
_INT_RANGE = {"i32": (-(2**31), 2**31 - 1), "u32": (0, 2**32 - 1)}


def _tensor(x: Any) -> Tensor:
    if isinstance(x, Tensor):
        if x.dtype.kind not in "fiu":
            raise TypeError(f"{x.dtype} tensors are not supported here; use float32, "
                            "float16, int32 or uint32")
        return x
    array = np.asarray(x)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"cannot apply a math function to {array.dtype} data")
    return upload(array, None, None)


def _unary(op: str, x: Any, lo: float = 0.0, hi: float = 0.0) -> Tensor:
    x = _tensor(x)
    if x.dtype.kind != "f":
        if op not in _INT_OPS:
            # numpy computes these in floating point for integer input too.
            x = x.astype(np.float32)
        else:
            return _unary_int(op, x, lo, hi)
    out = Tensor.empty(x.shape, x.dtype, device=x.device)
    kernel = cached_kernel("elementwise/unary", {"T": wgsl_scalar(x.dtype)}, {"OP": _OPS[op]})
    kernel.dispatch(kernel.groups_for(x.size), x, out, n=x.size, lo=lo, hi=hi)
    return out


def _unary_int(op: str, x: Tensor, lo: float, hi: float) -> Tensor:
    wgsl = wgsl_scalar(x.dtype)
    low, high = _INT_RANGE[wgsl]
    if op == "clip":
        # Bounds beyond the dtype's range clip nothing; saturate them instead of wrapping.
        lo, hi = max(lo, low), min(hi, high)
        if lo != int(lo) or hi != int(hi):
            x = x.astype(np.float32)
            return _unary(op, x, lo, hi)
    out = Tensor.empty(x.shape, x.dtype, device=x.device)
    kernel = cached_kernel("elementwise/unary_int", {"T": wgsl}, {"OP": _INT_OPS[op]})
    kernel.dispatch(kernel.groups_for(x.size), x, out, n=x.size,
                    lo_bits=int(lo) & 0xFFFFFFFF, hi_bits=int(hi) & 0xFFFFFFFF)
    return out


def exp(x: Any) -> Tensor:
    """e**x elementwise (float32/float16; integers give float32). numpy: `np.exp`."""
    return _unary("exp", x)


def log(x: Any) -> Tensor:
    """Natural logarithm elementwise (float32/float16). numpy: `np.log`."""
    return _unary("log", x)


def sqrt(x: Any) -> Tensor:
    """Square root elementwise (float32/float16). numpy: `np.sqrt`."""
    return _unary("sqrt", x)


def rsqrt(x: Any) -> Tensor:
    """1 / sqrt(x) elementwise (float32/float16). torch: `torch.rsqrt`."""
    return _unary("rsqrt", x)


def tanh(x: Any) -> Tensor:
    """Hyperbolic tangent elementwise, exactly +-1 for large |x| (float32/float16).
    numpy: `np.tanh`."""
    return _unary("tanh", x)


def sigmoid(x: Any) -> Tensor:
    """1 / (1 + exp(-x)) elementwise, overflow-free (float32/float16).
    scipy: `scipy.special.expit`; torch: `torch.sigmoid`."""
    return _unary("sigmoid", x)


def silu(x: Any) -> Tensor:
    """x * sigmoid(x) elementwise (float32/float16). torch: `torch.nn.functional.silu`."""
    return _unary("silu", x)


def gelu(x: Any, *, approximate: str = "none") -> Tensor:
    """Gaussian error linear unit, x * Phi(x) (float32/float16).

    approximate="none" is the exact erf form; WGSL has no erf, so erfc comes from the
    Numerical Recipes Chebyshev fit (fractional error < 1.2e-7, i.e. ~1e-7 absolute in
    Phi). approximate="tanh" is 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x**3))).
    torch: `torch.nn.functional.gelu(x, approximate=...)`.
    """
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return _unary("gelu" if approximate == "none" else "gelu_tanh", x)


def clip(x: Any, a_min: float | None, a_max: float | None) -> Tensor:
    """x limited to [a_min, a_max] elementwise (None leaves that side open); where
    a_min > a_max every element becomes a_max, as in numpy. Scalar bounds take one pass;
    array bounds broadcast through `maximum`/`minimum`. numpy: `np.clip`."""
    if a_min is None and a_max is None:
        raise ValueError("clip needs a_min or a_max (or both); got None for both")
    if not all(b is None or (not isinstance(b, Tensor) and np.ndim(b) == 0)
               for b in (a_min, a_max)):
        from .elementwise import maximum, minimum

        out = x if a_min is None else maximum(x, a_min)
        return out if a_max is None else minimum(out, a_max)
    lo = -np.inf if a_min is None else float(a_min)
    hi = np.inf if a_max is None else float(a_max)
    return _unary("clip", x, lo, hi)


def abs(x: Any) -> Tensor:
    """|x| elementwise (any dtype; int32's minimum stays negative, as in numpy).
    numpy: `np.abs`."""
    return _unary("abs", x)


def negative(x: Any) -> Tensor:
    """-x elementwise (any dtype; integers wrap). numpy: `np.negative`."""
    return _unary("negative", x)
