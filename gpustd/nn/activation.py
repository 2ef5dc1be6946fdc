"""Activations of the SD networks (f32 math, f16 or f32 storage): shaders/nn/activation.wgsl."""

from __future__ import annotations

from .._tensor import Tensor
from ._util import check_float, kernel

__all__ = ["geglu", "gelu", "quick_gelu", "silu"]

_SILU, _GELU_ERF, _GELU_TANH, _QUICK_GELU = 0, 1, 2, 3
_APPROXIMATE = {"none": _GELU_ERF, "tanh": _GELU_TANH}


def _gelu_op(approximate: str, op: str) -> int:
    if approximate not in _APPROXIMATE:
        raise ValueError(f"{op}: approximate must be 'none' or 'tanh', got {approximate!r}")
    return _APPROXIMATE[approximate]


def _unary(x: Tensor, code: int, op: str) -> Tensor:
    check_float(x, "x", op)
    out = Tensor.empty(x.shape, x.dtype, device=x.device)
    k = kernel("activation", {"T": x.dtype}, parts=("nn/gelu",), OP=code)
    k.dispatch(k.groups_for(x.size), x, out, n=x.size, d=1)
    return out


def silu(x: Tensor) -> Tensor:
    """x * sigmoid(x), elementwise, any shape. torch: `F.silu(x)`."""
    return _unary(x, _SILU, "silu")


def gelu(x: Tensor, *, approximate: str = "none") -> Tensor:
    """GELU, elementwise: exact (erf) or `approximate="tanh"`. torch: `F.gelu(x, approximate=)`."""
    return _unary(x, _gelu_op(approximate, "gelu"), "gelu")


def quick_gelu(x: Tensor) -> Tensor:
    """x * sigmoid(1.702 x), CLIP's GELU approximation. transformers: `QuickGELUActivation`."""
    return _unary(x, _QUICK_GELU, "quick_gelu")


def geglu(x: Tensor, *, approximate: str = "none") -> Tensor:
    """GEGLU in one pass: x [..., 2D] -> [..., D] = x[..., :D] * gelu(x[..., D:]).

    The order follows diffusers' GEGLU (`hidden, gate = proj(x).chunk(2, -1);
    hidden * gelu(gate)`). torch: `a, b = x.chunk(2, -1); a * F.gelu(b)`.
    """
    op = "geglu"
    code = _gelu_op(approximate, op)
    check_float(x, "x", op)
    if x.ndim < 1 or x.shape[-1] % 2:
        raise ValueError(f"{op}: the last dimension must be even (value and gate halves), "
                         f"got shape {x.shape}")
    d = x.shape[-1] // 2
    out = Tensor.empty((*x.shape[:-1], d), x.dtype, device=x.device)
    k = kernel("activation", {"T": x.dtype}, parts=("nn/gelu",), entry="geglu",
               OP=code)
    k.dispatch(k.groups_for(out.size), x, out, n=out.size, d=max(d, 1))
    return out
