"""Producers that quantize what they write for the W8A8 layers that read it
(gpustd.nn.int8_linear): the modulated LayerNorm before a DiT's attention and MLP, and the
GELU / GEGLU between an MLP's two projections. Each writes its float result as it always
did and, in the same pass, the int8 rows (and per-row scales) quantize_rows would make of it,
so the W8A8 GEMMs after it skip their own quantization pass.

The result is an Int8Rows: a Tensor (the float values, for any other reader) that also holds
`words`, `scales` and the `smooth` factors they were quantized under; int8_linear and
int8_linears use them where the weight's smoothing is the same tensor (or both none), bit
for bit what quantize_rows gives (shaders/quant/layer_norm_i8.wgsl, gelu_i8.wgsl).
The rows describe the values as written: an in-place write to an Int8Rows leaves them stale
(none of the producers' callers writes into what they return).

`FUSED` (True) switches the producers' callers (nn.Linear.int8_input) back to the separate
passes when False, for comparisons.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Buffer, Device, Kernel

from .._tensor import Tensor
from ._util import check_float, check_same, dummy
from .activation import _gelu_op
from .norm import row_lanes

__all__ = ["FUSED", "Int8Rows", "gelu_int8", "layer_norm_int8", "no_smoothing"]

FUSED = True
_GROUPS_X = 65535  # workgroups per grid dimension WebGPU guarantees


class Int8Rows(Tensor):
    """A float tensor [..., k] with its rows quantized as quantize_rows(x.reshape(-1, k),
    smooth) would quantize them: `words` int32 [rows, ceil(k / 4)], `scales` float32 [rows],
    `smooth` the float32 [k] factors applied first (None for none)."""

    __slots__ = ("scales", "smooth", "words")

    def __init__(self, values: Tensor, words: Tensor, scales: Tensor,
                 smooth: Tensor | None) -> None:
        super().__init__(values.buffer, values.shape)
        self.words, self.scales, self.smooth = words, scales, smooth


def no_smoothing(device: Device) -> Buffer[Any]:
    """The placeholder factors binding of the quantizing kernels without smoothing."""
    return device.keep(("int8 no smooth",), lambda: Buffer(1, np.float32, device=device,
                                                           read_only=True))


def _outputs(shape: tuple[int, ...], dtype: Any, device: Device, k: int, smooth: Tensor | None,
             op: str) -> tuple[Tensor, Tensor, Tensor, int, int]:
    if smooth is not None and (smooth.shape != (k,) or smooth.dtype != np.float32):
        raise ValueError(f"{op}: smooth must be float32 of shape ({k},), got {smooth.dtype} "
                         f"{smooth.shape}")
    rows = int(np.prod(shape[:-1]))
    kw = (k + 3) // 4
    values = Tensor.empty(shape, dtype, device=device)
    words = Tensor.empty((rows, kw), np.int32, device=device)
    scales = Tensor.empty((rows,), np.float32, device=device)
    if rows and not k:  # quantize_rows' zero rows
        words.buffer.fill_zero()
        scales.buffer.fill_zero()
    return values, words, scales, rows, kw


def layer_norm_int8(x: Tensor, shift: Tensor | None = None, scale: Tensor | None = None, *,
                    weight: Tensor | None = None, bias: Tensor | None = None,
                    eps: float = 1e-5, smooth: Tensor | None = None) -> Int8Rows:
    """layer_norm(x, weight, bias, eps) over x [B, ..., D], then `x * (1 + scale) + shift`
    with shift and scale (B, 1, D) where given (adaLN's modulation, in x's dtype; not with
    weight and bias), as an Int8Rows quantized under `smooth`. torch: `F.layer_norm(x, (D,),
    weight, bias, eps) * (1 + scale) + shift`, its rows then quantized per row to int8
    (quantize_rows)."""
    op = "layer_norm_int8"
    check_float(x, "x", op)
    check_same(op, x, shift=shift, scale=scale, weight=weight, bias=bias)
    if x.ndim < 2:
        raise ValueError(f"{op}: x must be [B, ..., D], got shape {x.shape}")
    batch, d = x.shape[0], x.shape[-1]
    if (shift is None) != (scale is None) or (weight is None) != (bias is None):
        raise ValueError(f"{op}: pass both shift and scale (and both weight and bias), or "
                         "neither")
    if shift is not None and weight is not None:
        raise ValueError(f"{op}: a modulated norm has no weight and bias of its own; pass "
                         "shift and scale, or weight and bias")
    for name, t, size in (("shift", shift, batch * d), ("scale", scale, batch * d),
                          ("weight", weight, d), ("bias", bias, d)):
        if t is not None and t.size != size:
            want = f"({batch}, 1, {d})" if size != d else f"({d},)"
            raise ValueError(f"{op}: {name} must have shape {want}, got {t.shape}")
    values, words, scales, rows, kw = _outputs(x.shape, x.dtype, x.device, d, smooth, op)
    if rows and d:
        tpr = row_lanes(d, x.device)
        kernel = Kernel.cached("quant/layer_norm_i8", parts=("nn/layer_norm_row",
                                                             "quant/level_i8"),
                               types={"T": x.dtype}, constants=dict(
                                   TPR=tpr, MODULATE=int(shift is not None),
                                   AFFINE=int(weight is not None), SMOOTH=int(smooth is not None)))
        # the norm's bias and weight take the modulation's bindings (eight storage buffers)
        add, multiply = (shift, scale) if weight is None else (bias, weight)
        kernel.dispatch(-(-rows // (256 // tpr)), x, add if add is not None else dummy(x),
                        multiply if multiply is not None else dummy(x),
                        smooth.buffer if smooth is not None else no_smoothing(x.device),
                        values, words, scales, rows=rows, d=d, kw=kw,
                        tokens=max(rows // batch, 1), eps=eps)
    return Int8Rows(values, words, scales, smooth)


def gelu_int8(x: Tensor, *, approximate: str = "none", gated: bool = False,
              smooth: Tensor | None = None) -> Int8Rows:
    """gelu(x) (gated: geglu(x), x [..., 2k] -> [..., k]) as an Int8Rows quantized under
    `smooth`: gpustd.nn.gelu / geglu's values, their rows then quantized per row to int8
    (quantize_rows)."""
    op = "geglu_int8" if gated else "gelu_int8"
    check_float(x, "x", op)
    code = _gelu_op(approximate, op)
    if x.ndim < 1 or (gated and x.shape[-1] % 2):
        raise ValueError(f"{op}: x must end in an even dimension (value and gate halves) "
                         f"when gated, got shape {x.shape}")
    k = x.shape[-1] // 2 if gated else x.shape[-1]
    values, words, scales, rows, kw = _outputs((*x.shape[:-1], k), x.dtype, x.device, k,
                                               smooth, op)
    if rows and k:
        kernel = Kernel.cached("quant/gelu_i8", parts=("nn/gelu", "quant/level_i8"),
                               types={"T": x.dtype}, constants=dict(
                                   OP=code, GATED=int(gated), SMOOTH=int(smooth is not None)))
        grid = (min(rows, _GROUPS_X), -(-rows // _GROUPS_X), 1)
        kernel.dispatch(grid, x, smooth.buffer if smooth is not None else no_smoothing(x.device),
                        values, words, scales, m=rows, k=k, kw=kw)
    return Int8Rows(values, words, scales, smooth)
