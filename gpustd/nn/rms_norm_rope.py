"""rms_norm_rope: the RMS norm of each attention head and the rotary embedding after it, in
one pass (shaders/nn/rms_norm_rope.wgsl) — the transformers' q/k path, and either half
alone (a plain RMS norm over the last axis, a plain rotation)."""

from __future__ import annotations

import math

import numpy as np

from .._tensor import Tensor
from ._util import check_float, check_same, dummy, kernel
from .norm import row_lanes

__all__ = ["rms_norm_rope"]


def _check_tables(op: str, x: Tensor, cos: Tensor, sin: Tensor, total: int, d: int) -> None:
    for name, table in (("cos", cos), ("sin", sin)):
        if not isinstance(table, Tensor) or table.dtype != np.float32:
            raise TypeError(f"{op}: {name} must be a float32 Tensor (rope_tables'), got "
                            f"{getattr(table, 'dtype', type(table).__name__)}")
        if table.device is not x.device:
            raise ValueError(f"{op}: {name} is on {table.device.name}, x on {x.device.name}; "
                             "make the tables on x's device")
        if table.size != total * d:
            raise ValueError(f"{op}: {name} of shape {table.shape} does not hold {total} "
                             f"positions of {d} features (tables (tokens, 1, head_dim))")
    if d % 2:
        raise ValueError(f"{op}: a rotation needs an even head_dim, got {d}")


def rms_norm_rope(x: Tensor, weight: Tensor | None = None, rotary: tuple[Tensor, Tensor]
                  | None = None, *, heads: int = 1, eps: float | None = 1e-6,
                  halves: bool = False, out: Tensor | None = None, start: int = 0,
                  zero_centred: bool = False) -> Tensor:
    """Per-head RMS norm then rotary embedding of x (B, L, heads * D) (any shape [..., D]
    with heads=1 and neither rotary nor out).

    Norm (eps not None): x / sqrt(mean(x^2 over D) + eps) * weight [D] (None: no scale; a
    float dtype of its own, as T5's float32 norms of float16 rows; `zero_centred`: the scale
    is 1 + weight, added in float32 here rather than by a pass of its own, as Krea 2's
    checkpoints store it), statistics in float32, rounded to x's dtype as a separate norm's
    output is. Rotation (rotary = rope_tables' float32 cos, sin (positions, 1, D)): each pair
    (x[2i], x[2i+1]) — with `halves`, (x[i], x[i+D/2]) — turned by its angle, in float32.
    `out` (B, total, heads * D) receives the result at tokens start..start+L (rotated by the
    tables' rows there; they must cover `total` positions), as the text and image parts of a
    joint sequence are written in place; without it a new tensor like x (start 0).
    torch: `apply_rotary_emb(nn.RMSNorm(D, eps)(x.unflatten(-1, (heads, D))), (cos, sin))`.
    """
    op = "rms_norm_rope"
    check_float(x, "x", op)
    check_same(op, x, out=out)
    if weight is not None:
        check_float(weight, "weight", op)
        if weight.device is not x.device:
            raise ValueError(f"{op}: weight is on {weight.device.name}, x on {x.device.name}; "
                             "move it with .to(device)")
    if heads < 1 or x.ndim < 1 or x.shape[-1] % heads:
        raise ValueError(f"{op}: x's last axis ({x.shape[-1:]}) must split into {heads} heads")
    d = x.shape[-1] // heads
    if zero_centred and weight is None:
        raise ValueError(f"{op}: zero_centred=True needs the weight it offsets from 1")
    if weight is not None and weight.shape != (d,):
        raise ValueError(f"{op}: weight must have shape ({d},), got {weight.shape}")
    rows = x.size // d if d else 0
    length = x.shape[1] if x.ndim == 3 else rows  # rows of another shape map one to one
    if out is None:
        if start:
            raise ValueError(f"{op}: start={start} needs an out tensor to write into")
        out = Tensor.empty(x.shape, x.dtype, device=x.device)
        total = length
    else:
        total = out.shape[1] if out.ndim == 3 else 0
        if (x.ndim != 3 or out.ndim != 3 or out.shape[0] != x.shape[0]
                or out.shape[2] != x.shape[2] or not 0 <= start <= total - length):
            raise ValueError(f"{op}: x {x.shape} does not fit out {out.shape} from token "
                             f"{start} (both (B, L, heads * D))")
    if rotary is not None:
        if x.ndim != 3:
            raise ValueError(f"{op}: a rotation needs x as (B, L, heads * D), got {x.shape}")
        _check_tables(op, x, *rotary, total, d)
    if x.size == 0:
        return out
    tpr = row_lanes(d, x.device)
    scale = weight if weight is not None else dummy(x)
    k = kernel("rms_norm_rope", {"T": x.dtype, "W": scale.dtype},
               parts=("nn/layer_norm_row", "nn/rms_norm_row"), TPR=tpr, NORM=int(eps is not None),
               AFFINE=int(weight is not None), CENTRED=int(zero_centred),
               ROPE=int(rotary is not None), HALVES=int(halves))
    cos, sin = rotary if rotary is not None else (dummy(x, np.float32),) * 2
    k.dispatch(math.ceil(rows / (256 // tpr)), x, scale, cos, sin, out, rows=rows, d=d,
               eps=eps or 0.0, heads=heads if x.ndim == 3 else 1, length=length, total=total,
               start=start)
    return out
