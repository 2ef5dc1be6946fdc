"""Normalization layers: group_norm (with optional fused SiLU), group_norm_prologue (the
same folded into the next conv's input), layer_norm, and the DiTs' adaLN norms:
layer_norm_modulate and rms_norm_modulate."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._tensor import Tensor
from ._util import check_float, check_same, dummy, kernel
from .prologue import ConvPrologue

__all__ = ["group_norm", "group_norm_prologue", "layer_norm", "layer_norm_modulate",
           "rms_norm_modulate"]

_CPU_WG = 8  # GroupNorm's workgroup size on CPU adapters (_norm_kernel)
_CHUNK = 8192  # elements per workgroup in group_norm: thousands of workgroups at 512x512


def _affine(op: str, x: Tensor, weight: Tensor | None, bias: Tensor | None,
            size: int) -> bool:
    check_same(op, x, weight=weight, bias=bias)
    if (weight is None) != (bias is None):
        raise ValueError(f"{op}: pass both weight and bias, or neither")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.shape != (size,):
            raise ValueError(f"{op}: {name} must have shape ({size},), got {t.shape}")
    return weight is not None


def _geometry(op: str, x: Tensor, num_groups: int, weight: Tensor | None,
              bias: Tensor | None) -> tuple[bool, dict[str, int]] | None:
    """GroupNorm's arguments checked: (affine, the chunks' geometry), or None for an empty x."""
    check_float(x, "x", op)
    if x.ndim < 2:
        raise ValueError(f"{op}: x must be [N, C, ...], got shape {x.shape}")
    n, c = x.shape[:2]
    if not isinstance(num_groups, (int, np.integer)) or num_groups < 1 or c % num_groups:
        raise ValueError(f"{op}: num_groups={num_groups!r} must be a positive divisor of the "
                         f"{c} channels")
    affine = _affine(op, x, weight, bias, c)
    if x.size == 0:
        return None
    group_size = c // num_groups * (x.size // (n * c))
    chunks = math.ceil(group_size / _CHUNK)
    return affine, dict(group_size=group_size, chunk=_CHUNK, chunks=chunks,
                        total_chunks=n * num_groups * chunks)


def _chunk_stats(x: Tensor, geometry: dict[str, int]) -> Tensor:
    """GroupNorm's pass 1: (count, mean - x0, M2) of every chunk, [total_chunks, 3] f32."""
    total = geometry["total_chunks"]
    partial = Tensor.empty((total, 3), np.float32, device=x.device)
    _norm_kernel("group_norm_stats", x, ("nn/group_norm_moments",)).dispatch(
        total, x, partial, **geometry)
    return partial


def _norm_kernel(name: str, x: Tensor, parts: tuple[str, ...] = (), **constants: Any) -> Any:
    """A GroupNorm kernel for x [N, C, *spatial]: four elements a load where every channel's
    run (and so every chunk and group) starts at a multiple of 4, else one."""
    width = 4 if (x.size // (x.shape[0] * x.shape[1])) % 4 == 0 else 1
    types = {"T": x.dtype, "V": "vec4<T>" if width == 4 else "T"}
    if x.device.info.type == "cpu":
        # llvmpipe runs a workgroup's invocations eight at a time and pays for each barrier
        # per group of eight: the tree reductions' 18 barriers over 256 invocations were most
        # of a GroupNorm (3.7 ms at 32 x 32 x 32); one group of eight takes 0.8 ms. Every
        # GroupNorm kernel of the device takes the same size, so they keep one another's bits.
        constants = {"WG": _CPU_WG, **constants}
    return kernel(name, types, parts=parts, W=width, **constants)


def group_norm(x: Tensor, num_groups: int, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5, *, silu: bool = False) -> Tensor:
    """Group normalization of x [N, C, *spatial] over C/num_groups channels x spatial.

    weight and bias ([C], or both None) scale and shift each channel; `silu=True` applies
    x * sigmoid(x) afterwards in the same pass. Statistics in float32 (chunked two-pass +
    pairwise merge). torch: `F.group_norm(x, num_groups, weight, bias, eps)` (then `F.silu`).
    A conv that follows: `group_norm_prologue` reads x normalized without writing it.
    """
    found = _geometry("group_norm", x, num_groups, weight, bias)
    out = Tensor.empty(x.shape, x.dtype, device=x.device)
    if found is None:
        return out
    affine, geometry = found
    # a group of one chunk: the apply pass's workgroup takes the statistics itself (the
    # same bits), one dispatch instead of two; `partial` is then not read
    whole = geometry["chunks"] == 1
    partial = dummy(x, np.float32) if whole else _chunk_stats(x, geometry)
    apply = _norm_kernel("group_norm_apply", x, ("nn/group_norm_merge", "nn/group_norm_moments"),
                         AFFINE=int(affine), SILU=int(silu), STATS=int(whole))
    gamma, beta = (weight, bias) if affine else (dummy(x), dummy(x))
    apply.dispatch(geometry["total_chunks"], x, partial, gamma, beta, out,
                   hw=x.size // (x.shape[0] * x.shape[1]), channels=x.shape[1], eps=eps,
                   **geometry)
    return out


def group_norm_prologue(x: Tensor, num_groups: int, weight: Tensor | None = None,
                        bias: Tensor | None = None, eps: float = 1e-5, *,
                        silu: bool = False) -> ConvPrologue:
    """`group_norm(x, ..., silu=silu)` for gpustd.nn.conv2d to apply as it reads x
    (`conv2d(x, w, prologue=group_norm_prologue(x, ...))` equals `conv2d(group_norm(x, ...),
    w)`, padding included): only the statistics pass runs here, and a [N, C] table of each
    channel's scale and shift is all that is written. x: [N, C, H, W]."""
    op = "group_norm_prologue"
    check_float(x, "x", op, ndim=4)
    n, c = x.shape[:2]
    table = Tensor.empty((n, c, 4), np.float32, device=x.device)
    found = _geometry(op, x, num_groups, weight, bias)
    if found is not None:
        affine, geometry = found
        partial = _chunk_stats(x, geometry)
        finish = _norm_kernel("group_norm_prologue", x, ("nn/group_norm_merge",),
                              AFFINE=int(affine))
        gamma, beta = (weight, bias) if affine else (dummy(x), dummy(x))
        finish.dispatch(n * num_groups, x, partial, gamma, beta, table,
                        per_group=c // num_groups, channels=c, eps=eps, **geometry)
    return ConvPrologue(table, silu)


def layer_norm(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """Layer normalization over the last dimension of x [..., D] (float32 statistics).

    weight and bias: [D], or both None. torch: `F.layer_norm(x, (D,), weight, bias, eps)`.
    """
    op = "layer_norm"
    check_float(x, "x", op)
    if x.ndim < 1:
        raise ValueError(f"{op}: x must have at least one dimension")
    d = x.shape[-1]
    affine = _affine(op, x, weight, bias, d)
    out = Tensor.empty(x.shape, x.dtype, device=x.device)
    if x.size == 0:
        return out
    rows = x.size // d
    tpr = row_lanes(d, x.device)
    k = kernel("layer_norm", {"T": x.dtype}, parts=("nn/layer_norm_row",), TPR=tpr,
               AFFINE=int(affine))
    gamma, beta = (weight, bias) if affine else (dummy(x), dummy(x))
    k.dispatch(math.ceil(rows / (256 // tpr)), x, gamma, beta, out, rows=rows, d=d, eps=eps,
               length=rows, width=d, scale_at=0, shift_at=0)
    return out


def _columns(op: str, x: Tensor, shift: Tensor | None, scale: Tensor, shift_at: int,
             scale_at: int) -> int:
    """The modulated norms' arguments checked (x [B, L, D]; shift, where there is one, and
    scale [B, 1, W] with D columns from shift_at and scale_at): W."""
    check_float(x, "x", op, ndim=3)
    check_same(op, x, shift=shift, scale=scale)
    batch, _, d = x.shape
    width = scale.shape[-1] if scale.ndim == 3 else -1
    for name, t, at in (("shift", shift, shift_at), ("scale", scale, scale_at)):
        if t is None:
            continue
        if t.shape[:2] != (batch, 1) or t.ndim != 3 or t.shape[2] != width:
            raise ValueError(f"{op}: {name} must have shape ({batch}, 1, {d}) for x {x.shape} "
                             f"(or shift's and scale's (B, 1, W) with columns), got {t.shape}")
        if not 0 <= at <= width - d:
            raise ValueError(f"{op}: {name}'s {d} columns from {name}_at={at} do not fit its "
                             f"width {width}; give a column in [0, {width - d}]")
    return width


def layer_norm_modulate(x: Tensor, shift: Tensor, scale: Tensor, eps: float = 1e-6, *,
                        shift_at: int = 0, scale_at: int = 0) -> Tensor:
    """adaLN: layer_norm(x) (no affine) * (1 + scale) + shift in one pass, x [B, L, D], shift
    and scale [B, 1, W] read at columns [shift_at, shift_at + D) and [scale_at, scale_at + D)
    (W = D and 0 by default; an adaLN linear's whole output [B, 1, n * D] passed as both reads
    its chunks in place). The norm is rounded to x's dtype and modulated in x's arithmetic, as
    the two passes compute it: their bits. torch: `F.layer_norm(x, (D,), eps=eps) *
    (1 + scale[..., scale_at:scale_at + D]) + shift[..., shift_at:shift_at + D]`."""
    op = "layer_norm_modulate"
    width = _columns(op, x, shift, scale, shift_at, scale_at)
    batch, length, d = x.shape
    out = Tensor.empty(x.shape, x.dtype, device=x.device)
    if x.size == 0:
        return out
    rows = batch * length
    tpr = row_lanes(d, x.device)
    k = kernel("layer_norm", {"T": x.dtype}, parts=("nn/layer_norm_row",), TPR=tpr,
               AFFINE=0, MODULATE=1)
    k.dispatch(math.ceil(rows / (256 // tpr)), x, scale, shift, out, rows=rows, d=d, eps=eps,
               length=length, width=width, scale_at=scale_at, shift_at=shift_at)
    return out


def rms_norm_modulate(x: Tensor, weight: Tensor | None, shift: Tensor | None, scale: Tensor,
                      eps: float = 1e-6, *, zero_centred: bool = False, shift_at: int = 0,
                      scale_at: int = 0) -> Tensor:
    """RMS norm then adaLN in one pass: x [B, L, D] / sqrt(mean(x^2 over D) + eps) * weight
    [D] (None: no weight; any float dtype; `zero_centred`: times 1 + weight, added in float32),
    statistics in float32, rounded to x's dtype as rms_norm_rope's output is, then * (1 +
    scale) + shift in x's arithmetic (shift None: the scale alone), shift and scale read as
    layer_norm_modulate reads them (columns of [B, 1, W], in place from one adaLN output):
    the bits of rms_norm_rope then the DiTs' compiled modulate. torch: `nn.RMSNorm(D, eps)(x)
    * (1 + scale[..., scale_at:scale_at + D]) + shift[..., shift_at:shift_at + D]`."""
    op = "rms_norm_modulate"
    width = _columns(op, x, shift, scale, shift_at, scale_at)
    batch, length, d = x.shape
    if weight is not None:
        check_float(weight, "weight", op)
        if weight.device is not x.device or weight.shape != (d,):
            raise ValueError(f"{op}: weight must have shape ({d},) on x's device "
                             f"{x.device.name}, got {weight.shape} on {weight.device.name}")
    elif zero_centred:
        raise ValueError(f"{op}: zero_centred=True needs the weight it offsets from 1")
    out = Tensor.empty(x.shape, x.dtype, device=x.device)
    if x.size == 0:
        return out
    rows = batch * length
    tpr = row_lanes(d, x.device)
    gamma = weight if weight is not None else dummy(x)
    k = kernel("rms_norm_modulate", {"T": x.dtype, "W": gamma.dtype},
               parts=("nn/layer_norm_row", "nn/rms_norm_row"), TPR=tpr,
               AFFINE=int(weight is not None), CENTRED=int(zero_centred),
               SHIFT=int(shift is not None))
    k.dispatch(math.ceil(rows / (256 // tpr)), x, gamma, scale,
               shift if shift is not None else dummy(x), out, rows=rows, d=d, eps=eps,
               length=length, width=width, scale_at=scale_at, shift_at=shift_at)
    return out


def row_lanes(d: int, device: Any) -> int:
    """Invocations per row of layer_norm's kernels (shaders/nn/layer_norm_row.wgsl) for rows of
    d elements: enough to give each ~8 elements, but at least a warp's worth; on a CPU adapter
    one, a row an invocation (llvmpipe pays for a barrier per group of eight invocations, and
    the tree's 10-16 barriers were most of a small LayerNorm). The sums' order, and so their
    rounding, follows it."""
    if device.info.type == "cpu":
        return 1
    return min(256, max(32, 1 << max(0, math.ceil(math.log2(max(d, 1) / 8)))))
