"""Linear layers whose weight stays quantized (a gpustd.quant.QuantizedTensor in Q8_0, Q4_K or
Q5_0): the GEMM reads the GGML blocks and dequantizes them as its tiles load them
(shaders/quant/gemm_b_*.wgsl appended to shaders/linalg/gemm.wgsl), so no float copy of the
weight is ever made, against `linear(x, materialize(weight))`, which first expands the weight
into a scratch tensor (one extra pass over it and its float bytes held for the GEMM).

Each value is rounded to the compute dtype as the scratch is, and the tile and K splits are
the ones the float GEMM would take on the portable kernel, so where the float weight's GEMM
runs there too (every GPU without matrix units) both paths give the same result bit for bit
(a CPU adapter's float GEMM is its own direct kernel: the same sums in another order). Where
f16 GEMMs run on the matrix units (Dawn), the scratch path keeps them and `fuses` says no
unless FUSED.everywhere is set (bench/quant_gemm.py compares the two).
"""

from __future__ import annotations

import numpy as np

from .._tensor import Tensor
from ..gemm import matrix_units, portable
from ..gemm.dispatch import record_gemm
from ..gemm.plan import batch_plan
from ..quant import QuantizedTensor
from ._util import check_float, check_same
from .linear import _GELU, _check_accumulator, geglu_gemm

__all__ = ["FUSED", "fuses", "quantized_linear", "quantized_linear_geglu"]


class _Fused:
    """Where quantized weights are read inside the GEMM: `enabled` (False: always the scratch
    path), `everywhere` (True: on the matrix-unit devices too)."""

    enabled = True
    everywhere = False


FUSED = _Fused()


def fuses(weight: object, x: Tensor) -> bool:
    """Whether a layer should run `weight` through quantized_linear (see the module doc)."""
    return (isinstance(weight, QuantizedTensor) and FUSED.enabled and weight.on_device
            and weight.format in portable.B_FORMATS and weight.ndim == 2
            and (FUSED.everywhere or x.dtype != np.float16
                 or not matrix_units.available(x.device)))


def _check(op: str, x: Tensor, weight: QuantizedTensor, bias: Tensor | None) -> None:
    check_float(x, "x", op)
    check_same(op, x, bias=bias)
    if weight.format not in portable.B_FORMATS or weight.ndim != 2:
        raise ValueError(f"{op}: the GEMM reads {', '.join(portable.B_FORMATS)} weights of "
                         f"[out, in], not {weight!r}; dequantize it (gpustd.quant.materialize)")
    if not weight.on_device:
        raise ValueError(f"{op}: the weight is offloaded to host memory; restore it first")
    if weight.dtype != x.dtype or weight.device is not x.device:
        raise TypeError(f"{op}: the weight dequantizes to {weight.dtype} on "
                        f"{weight.device.name}, the input is {x.dtype} on {x.device.name}")
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"{op}: x {x.shape} must end in the weight's {weight.shape[1]} "
                         "input features")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"{op}: bias must have shape ({weight.shape[0]},), got {bias.shape}")


def quantized_linear(x: Tensor, weight: QuantizedTensor, bias: Tensor | None = None, *,
                     add_to: Tensor | None = None) -> Tensor:
    """gpustd.nn.linear (x [..., in] @ W.T + bias, add_to the residual added in place) with
    W [out, in] a Q8_0 / Q4_K / Q5_0 QuantizedTensor read by the GEMM itself.
    numpy: `x @ gguf.quants.dequantize(raw, qtype).reshape(out, in).T + bias`."""
    op = "quantized_linear"
    _check(op, x, weight, bias)
    n, k = weight.shape
    shape = (*x.shape[:-1], n)
    _check_accumulator(op, add_to, shape, x)
    out = add_to if add_to is not None else Tensor.empty(shape, x.dtype, device=x.device)
    m = out.size // n if n else 0
    if m and n:
        assert weight.blocks is not None
        record_gemm(x.buffer, weight.blocks, out.buffer, bias.buffer if bias is not None
                    else None, m=m, n=n, k=k, trans_a=False, trans_b=True, alpha=1.0,
                    beta=1.0 if add_to is not None else 0.0,
                    plan=batch_plan((1,), (), (), m * k, k * n), b_format=weight.format)
    return out


def quantized_linear_geglu(x: Tensor, weight: QuantizedTensor, bias: Tensor | None = None, *,
                           approximate: str = "none") -> Tensor:
    """gpustd.nn.linear_geglu (value * gelu(gate) of one [2D, in] projection, the gate in the
    GEMM's epilogue) with the weight a Q8_0 / Q4_K / Q5_0 QuantizedTensor read by the GEMM
    itself."""
    op = "quantized_linear_geglu"
    _check(op, x, weight, bias)
    if approximate not in _GELU or weight.shape[0] % 2:
        raise ValueError(f"{op}: approximate must be 'none' or 'tanh' (got {approximate!r}) "
                         f"and the weight {weight.shape} must have an even number of rows")
    assert weight.blocks is not None
    return geglu_gemm(x, weight.blocks, bias, weight.shape[0] // 2, x.shape[-1], approximate,
                      vec_b=True, b_format=weight.format)
