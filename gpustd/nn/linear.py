"""Linear layers and 1x1 convolutions on gpustd.linalg's GEMM, with what follows them (bias,
residual add, the NCHW <-> token layout change) folded into the one GEMM dispatch."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Buffer

from .._linalg_checks import check_size
from .._tensor import Tensor
from ..gemm import matrix_units, portable
from ..gemm.dispatch import (
    fused_tile,
    geglu_tile,
    parts_fit,
    record_gemm,
    record_gemm_gated_add,
    record_gemm_geglu,
    record_gemm_gelu,
    record_gemm_parts,
)
from ..gemm.plan import TILES, Tile, batch_plan, plan_gemm
from ..shape import put_slice
from ._util import check_float, check_same
from .activation import geglu, gelu

__all__ = ["conv1x1", "conv1x1_tokens", "linear", "linear_gated_add", "linear_geglu",
           "linear_gelu", "linears", "tokens_conv1x1"]

_GELU = {"none": 1, "tanh": 2}
# GEGLU's tile on CPU adapters (quantized weights' fused gate: float ones take the direct
# GEMM and the gate apart): llvmpipe compiles it in 0.43 s of CPU at its first dispatch
# against 0.66 for 64 x 64 (4 x 8 outputs an invocation, not 8 x 8), and runs it no slower;
# a tile changes no bit (each output sums its K in the same order).
_CPU_GEGLU_TILE = Tile(32, 64, 8, 4, 8)
# linears' one-dispatch path on the matrix units (False: one GEMM per weight, for comparison;
# bench/NOTES.md, "q, k and v in one dispatch", has the A/B).
PARTS = True


def _check_accumulator(op: str, acc: Tensor | None, shape: tuple[int, ...], x: Tensor) -> None:
    if acc is None:
        return
    check_same(op, x, add_to=acc)
    if acc.shape != shape:
        raise ValueError(f"{op}: add_to must have the result's shape {shape}, got {acc.shape}")
    if acc.buffer is x.buffer:
        raise ValueError(f"{op}: add_to must not share memory with x; pass a separate tensor")


def _check_weight(op: str, x: Tensor, weight: Tensor, bias: Tensor | None, in_dim: int) -> None:
    check_float(x, "x", op)
    check_float(weight, "weight", op)
    check_same(op, x, weight=weight, bias=bias)
    if weight.ndim not in (2, 4) or weight.shape[2:] not in ((), (1, 1)):
        raise ValueError(f"{op}: weight must be [out, in] or [out, in, 1, 1], got "
                         f"{weight.shape}")
    if weight.shape[1] != in_dim:
        raise ValueError(f"{op}: x has {in_dim} features (channels) but weight {weight.shape} "
                         f"takes {weight.shape[1]}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"{op}: bias must have shape ({weight.shape[0]},), got {bias.shape}")


def _record(a: Tensor, b: Tensor, out: Tensor, bias: Tensor | None, *, m: int, n: int, k: int,
            batch: int, a_batched: bool, b_batched: bool, trans_a: bool, trans_b: bool,
            beta: float = 0.0, bias_rows: bool = False) -> Tensor:
    plan = batch_plan((batch,), (batch,) if a_batched else (),
                      (batch,) if b_batched else (), m * k, k * n)
    record_gemm(a.buffer, b.buffer, out.buffer, bias.buffer if bias is not None else None,
                m=m, n=n, k=k, trans_a=trans_a, trans_b=trans_b, alpha=1.0, beta=beta,
                plan=plan, bias_rows=bias_rows)
    return out


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, *,
           add_to: Tensor | None = None) -> Tensor:
    """x [..., in] @ weight.T + bias, with weight [out, in] as stored in checkpoints.

    add_to: a tensor of the result's shape [..., out] that the result is added into IN PLACE
    in the GEMM's epilogue (a residual stream: one dispatch instead of two); it is returned.
    float32 or float16 (float32 accumulation). torch: `F.linear(x, weight, bias)`, with
    add_to `add_to += F.linear(x, weight, bias)`.
    """
    op = "linear"
    check_float(weight, "weight", op, ndim=2)
    if x.ndim < 1:
        raise ValueError(f"{op}: x must have at least one dimension")
    _check_weight(op, x, weight, bias, x.shape[-1])
    shape = (*x.shape[:-1], weight.shape[0])
    _check_accumulator(op, add_to, shape, x)
    m, n = math.prod(x.shape[:-1]), weight.shape[0]
    if add_to is None:
        # matmul(x, weight, trans_b=True, bias=bias)'s product, without its checks again
        check_size(op, ("x", x), ("weight", weight), ("out", (shape, x.dtype)),
                   *([("bias", bias)] if bias is not None else []))
        add_to = Tensor.empty(shape, x.dtype, device=x.device)
        beta = 0.0
    else:
        beta = 1.0
    if m and n:
        _record(x, weight, add_to, bias, m=m, n=n, k=x.shape[-1], batch=1, a_batched=False,
                b_batched=False, trans_a=False, trans_b=True, beta=beta)
    return add_to


def linears(x: Tensor, weights: list[Tensor],
            biases: list[Tensor | None] | None = None) -> list[Tensor]:
    """[linear(x, w, b) for w, b in zip(weights, biases)] (biases None: none); with PARTS,
    one GEMM dispatch where the matrix units take it (float16, weights of one shape, every
    layer with a bias or none, an even width where biases are): attention's q, k and v of one
    input fill the GPU together, where each alone leaves part of it idle (SDXL's 2048 x 1280
    x 1280: 0.146 against 0.22-0.29 ms for the three, H100). The biases are copied side by
    side on the GPU as the call records (three small copies, so that a replayed capture reads
    what a LoRA wrote into them since). Each result is linear's, bit for bit on the same
    tile, except where linear alone would split K (the parts run unsplit: f16 rounding
    apart). torch: `[F.linear(x, w, b) for w, b in zip(weights, biases)]`."""
    op = "linears"
    if x.ndim < 1:
        raise ValueError(f"{op}: x must have at least one dimension")
    biases = list(biases) if biases is not None else [None] * len(weights)
    if len(biases) != len(weights):
        raise ValueError(f"{op}: {len(weights)} weights but {len(biases)} biases; pass one "
                         "bias (or None) per weight")
    for weight, bias in zip(weights, biases):
        check_float(weight, "weight", op, ndim=2)
        _check_weight(op, x, weight, bias, x.shape[-1])
    shape = (*x.shape[:-1], weights[0].shape[0]) if weights else ()
    with_bias = [b is not None for b in biases]
    if (PARTS and parts_fit(x.device, x.dtype, len(weights)) and x.size and weights[0].size
            and all(w.shape == weights[0].shape for w in weights)
            and (not any(with_bias) or (all(with_bias) and shape[-1] % 2 == 0 and all(
                type(b.buffer) is Buffer for b in biases)))):  # type: ignore[union-attr]
        rows = x.reshape(-1, x.shape[-1])
        outs = [Tensor.empty(shape, x.dtype, device=x.device) for _ in weights]
        joined = _joined(biases) if any(with_bias) else None  # type: ignore[arg-type]
        if record_gemm_parts(rows.buffer, [w.buffer for w in weights], [o.buffer for o in outs],
                             m=rows.shape[0], n=shape[-1], k=x.shape[-1],
                             bias=joined.buffer if joined is not None else None):
            return outs
    return [linear(x, weight, bias) for weight, bias in zip(weights, biases)]


def _joined(biases: list[Tensor]) -> Tensor:
    """The biases (one even length n each) side by side, [len(biases) * n], by GPU copies
    recorded now (a capture repeats them)."""
    n = biases[0].shape[0]
    device = biases[0].device
    joined = Tensor.empty((len(biases) * n,), biases[0].dtype, device=device)
    size = n * joined.dtype.itemsize
    for i, bias in enumerate(biases):
        device.record_copy(bias.buffer.wgpu, 0, joined.buffer.wgpu, i * size, size)
    return joined


def conv1x1(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """A 1x1 convolution (stride 1, no padding, one group) of NCHW x as a batched GEMM:
    out[n] = weight[:, :, 0, 0] @ x[n].reshape(C_in, H*W) + bias per row (output channel),
    bias fused in the GEMM's epilogue.

    Shapes and dtypes as conv2d (checked there). torch: `F.conv2d(x, weight, bias)`.
    """
    n, c_in, h, w = x.shape
    c_out = weight.shape[0]
    out = Tensor.empty((n, c_out, h, w), x.dtype, device=x.device)
    return _record(weight, x, out, bias, m=c_out, n=h * w, k=c_in, batch=n, a_batched=False,
                   b_batched=True, trans_a=False, trans_b=False, bias_rows=True)


def conv1x1_tokens(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """A 1x1 convolution (or a linear layer over channels) of NCHW x [N, C_in, H, W] returned
    as tokens [N, H*W, C_out]: one GEMM reading x transposed, no permute.

    weight: [C_out, C_in] or [C_out, C_in, 1, 1]; bias: [C_out] or None.
    torch: `F.conv2d(x, weight.reshape(C_out, C_in, 1, 1), bias).flatten(2).transpose(1, 2)`.
    """
    op = "conv1x1_tokens"
    check_float(x, "x", op, ndim=4)
    n, c_in, h, w = x.shape
    _check_weight(op, x, weight, bias, c_in)
    c_out = weight.shape[0]
    out = Tensor.empty((n, h * w, c_out), x.dtype, device=x.device)
    if out.size == 0 or c_in == 0:
        return out
    return _record(x, weight, out, bias, m=h * w, n=c_out, k=c_in, batch=n, a_batched=True,
                   b_batched=False, trans_a=True, trans_b=True)


def tokens_conv1x1(tokens: Tensor, weight: Tensor, bias: Tensor | None, height: int,
                   width: int, *, add_to: Tensor | None = None) -> Tensor:
    """Tokens [N, H*W, C_in] through a 1x1 convolution (or a linear layer) returned as NCHW
    [N, C_out, H, W]: one GEMM reading the tokens transposed, no permute.

    weight: [C_out, C_in] or [C_out, C_in, 1, 1]; bias: [C_out] or None. add_to: an
    [N, C_out, H, W] tensor the result is added into IN PLACE in the GEMM's epilogue (a
    residual: one dispatch instead of two); it is returned.
    torch: `F.linear(tokens, weight.reshape(C_out, C_in), bias).transpose(1, 2)
    .reshape(N, C_out, H, W)` (with add_to: `add_to += ...`).
    """
    op = "tokens_conv1x1"
    check_float(tokens, "tokens", op, ndim=3)
    n, hw, c_in = tokens.shape
    if hw != height * width:
        raise ValueError(f"{op}: tokens {tokens.shape} hold {hw} positions, not "
                         f"height * width = {height} * {width}")
    _check_weight(op, tokens, weight, bias, c_in)
    c_out = weight.shape[0]
    _check_accumulator(op, add_to, (n, c_out, height, width), tokens)
    out = add_to if add_to is not None else Tensor.empty((n, c_out, height, width),
                                                         tokens.dtype, device=tokens.device)
    if out.size == 0 or c_in == 0:
        return out
    return _record(weight, tokens, out, bias, m=c_out, n=hw, k=c_in, batch=n, a_batched=False,
                   b_batched=True, trans_a=False, trans_b=True, bias_rows=True,
                   beta=0.0 if add_to is None else 1.0)


def linear_geglu(x: Tensor, weight: Tensor, bias: Tensor | None = None, *,
                 approximate: str = "none") -> Tensor:
    """diffusers' GEGLU in one GEMM: h = x @ weight.T + bias, [..., 2D] -> [..., D] =
    h[..., :D] * gelu(h[..., D:]), the gate applied in the GEMM's epilogue (the [..., 2D]
    projection is never stored).

    weight: [2D, in]; bias: [2D] or None; GELU exact (erf) or `approximate="tanh"`.
    torch: `a, b = F.linear(x, weight, bias).chunk(2, -1); a * F.gelu(b, approximate=...)`.
    """
    op = "linear_geglu"
    check_float(weight, "weight", op, ndim=2)
    if x.ndim < 1:
        raise ValueError(f"{op}: x must have at least one dimension")
    _check_weight(op, x, weight, bias, x.shape[-1])
    if approximate not in _GELU:
        raise ValueError(f"{op}: approximate must be 'none' or 'tanh', got {approximate!r}")
    if weight.shape[0] % 2:
        raise ValueError(f"{op}: weight {weight.shape} must have an even number of rows "
                         "(value and gate halves)")
    d, k = weight.shape[0] // 2, x.shape[-1]
    if x.dtype == np.float16 and matrix_units.available(x.device):
        # One matrix-unit GEMM with the gate in its epilogue where the shape fills its tile;
        # else the matrix units' GEMM and the gate apart (faster than the portable fusion).
        m = x.size // k if k else 0
        tile = geglu_tile(x.device, x.dtype, m, d, k)
        if tile is None:
            return geglu(linear(x, weight, bias), approximate=approximate)
        out = Tensor.empty((*x.shape[:-1], d), x.dtype, device=x.device)
        record_gemm_geglu(x.buffer, weight.buffer, bias.buffer if bias is not None else None,
                          out.buffer, m=m, d=d, k=k, approximate=_GELU[approximate], tile=tile)
        return out
    if x.device.info.type == "cpu":
        # A CPU adapter's direct GEMM (gpustd/gemm/cpu.py) and the gate apart: the portable
        # kernel's fused gate there runs its slow tiles
        return geglu(linear(x, weight, bias), approximate=approximate)
    # both operands are read along K (x as stored, weight transposed)
    return geglu_gemm(x, weight.buffer, bias, d, k, approximate, vec_b=k % 4 == 0)


def linear_gelu(x: Tensor, weight: Tensor, bias: Tensor | None = None, *,
                approximate: str = "none", out: Tensor | None = None, start: int = 0) -> Tensor:
    """gelu(x [..., in] @ weight.T + bias), the GELU in the GEMM's epilogue where the matrix
    units take the shape (float16 filling the tile: gemm.matrix_fused; the two passes'
    arithmetic, within an f16 ulp of them on an H200); elsewhere the two passes.

    out: a tensor [..., width] (x's leading axes) whose last-axis slice [start, start +
    weight.shape[0]) receives the result, a concatenation's part written in place; it is
    returned. torch: `F.gelu(F.linear(x, weight, bias), approximate=approximate)`.
    """
    op = "linear_gelu"
    check_float(weight, "weight", op, ndim=2)
    if x.ndim < 1:
        raise ValueError(f"{op}: x must have at least one dimension")
    _check_weight(op, x, weight, bias, x.shape[-1])
    if approximate not in _GELU:
        raise ValueError(f"{op}: approximate must be 'none' or 'tanh', got {approximate!r}")
    n, k = weight.shape
    if out is not None:
        check_same(op, x, out=out)
        if out.shape[:-1] != x.shape[:-1] or not 0 <= start <= out.shape[-1] - n:
            raise ValueError(f"{op}: {n} features from {start} do not fit out {out.shape} "
                             f"for x {x.shape} (out: x's leading axes, then the width)")
    elif start:
        raise ValueError(f"{op}: start={start} needs an out tensor to write into")
    m = x.size // k if k else 0
    tile = fused_tile(x.device, x.dtype, m, n, k)
    if tile is None:
        y = gelu(linear(x, weight, bias), approximate=approximate)
        if out is None:
            return y
        put_slice(out, y, start, axis=out.ndim - 1)
        return out
    target = out if out is not None else Tensor.empty((*x.shape[:-1], n), x.dtype,
                                                      device=x.device)
    record_gemm_gelu(x.buffer, weight.buffer, bias.buffer if bias is not None else None,
                     target.buffer, m=m, n=n, k=k, approximate=_GELU[approximate], tile=tile,
                     stride=target.shape[-1], column=start)
    return target


def linear_gated_add(x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor,
                     gate: Tensor, *, gate_at: int = 0) -> Tensor | None:
    """residual + gate * (x @ weight.T + bias), clipped to +-65504, in the GEMM's epilogue:
    adaLN-Zero's gated residual of a float16 stream (x [B, L, in], residual [B, L, out], gate
    [B, 1, out], all float16; or gate [B, 1, W] read from column gate_at: the adaLN output in
    place), where the matrix units take the shape (gemm.matrix_fused) and the fused epilogue is
    the faster (gemm.dispatch.fused_tile); None elsewhere, for the caller's own passes. The
    linear's output is rounded to float16 first and the rest computed in float32, as linear
    then that f32 expression (within an f16 ulp of them on an H200).
    torch: `(residual + gate[..., gate_at:gate_at + out] * F.linear(x, weight, bias))
    .clamp(-65504, 65504)`.
    """
    op = "linear_gated_add"
    check_float(weight, "weight", op, ndim=2)
    check_float(x, "x", op, ndim=3)
    _check_weight(op, x, weight, bias, x.shape[-1])
    check_same(op, x, residual=residual, gate=gate)
    batch, length, k = x.shape
    n = weight.shape[0]
    width = gate.shape[-1] if gate.ndim else 0
    if (residual.shape != (batch, length, n) or gate.shape != (batch, 1, width)
            or not 0 <= gate_at <= width - n):
        raise ValueError(f"{op}: residual {residual.shape} and gate {gate.shape} must be "
                         f"({batch}, {length}, {n}) and ({batch}, 1, {n}) for x {x.shape} (or a "
                         f"wider gate with its {n} columns from gate_at={gate_at})")
    tile = fused_tile(x.device, x.dtype, batch * length, n, k, "gated")
    if tile is None:
        return None
    out = Tensor.empty(residual.shape, x.dtype, device=x.device)
    record_gemm_gated_add(x.buffer, weight.buffer, bias.buffer if bias is not None else None,
                          out.buffer, residual.buffer, gate.buffer, m=batch * length, n=n, k=k,
                          tile=tile, length=length, gate_width=width, gate_at=gate_at)
    return out


def geglu_gemm(x: Tensor, b: Buffer[Any], bias: Tensor | None, d: int, k: int,
               approximate: str, *, vec_b: bool, b_format: str = "") -> Tensor:
    """linear_geglu's one portable GEMM, its checks done: x [..., k] against the [2d, k]
    weight in `b` (floats, or GGML blocks of `b_format`: gpustd.nn.quantized_linear)."""
    device = x.device
    out = Tensor.empty((*x.shape[:-1], d), x.dtype, device=device)
    if out.size == 0:
        return out
    m = out.size // d
    plan = plan_gemm(m, 2 * d, k, 1)
    tile, paired = (plan.tile if plan.tile.tn == 8 else TILES["64x64"]), plan.paired
    if device.info.type == "cpu":
        tile, paired = _CPU_GEGLU_TILE, False
    if tile.workgroup_bytes > device.limits["max-compute-workgroup-storage-size"]:
        tile = TILES["64x64"]
    kernel = portable.gemm_kernel(x.dtype, tile, trans_a=False, trans_b=True,
                                  vec_a=k % 4 == 0, vec_b=vec_b, paired=paired,
                                  geglu=_GELU[approximate], b_format=b_format)
    grid = (math.ceil(d / (tile.bn // 2)), math.ceil(m / tile.bm), 1)
    bias_buffer = bias.buffer if bias is not None else portable.no_bias(device, x.dtype)
    portable.dispatch(kernel, grid, x.buffer, b, bias_buffer, out.buffer, m=m, n=d,
                      k=k, k_tiles_per_split=math.ceil(k / tile.bk),
                      has_bias=int(bias is not None))
    return out
