"""Data movement of the UNet/VAE: upsample_nearest2x, concat, pad (NCHW)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._tensor import Tensor
from ._util import kernel

__all__ = ["concat", "pad", "upsample_nearest2x"]


def _check_tensor(x: Any, name: str, op: str, min_ndim: int = 0) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a gpustd Tensor, got {type(x).__name__}; "
                        "upload with gpustd.asarray(...)")
    if x.ndim < min_ndim:
        raise ValueError(f"{op}: {name} needs at least {min_ndim} dimensions, got shape "
                         f"{x.shape}")
    return x


def upsample_nearest2x(x: Tensor) -> Tensor:
    """Nearest-neighbour 2x upsampling of the last two dimensions: [..., H, W] -> [..., 2H, 2W].

    torch: `F.interpolate(x, scale_factor=2, mode="nearest")` (for NCHW x).
    """
    _check_tensor(x, "x", "upsample_nearest2x", 2)
    h, w = x.shape[-2:]
    out = Tensor.empty((*x.shape[:-2], 2 * h, 2 * w), x.dtype, device=x.device)
    k = kernel("upsample_nearest2x", {"T": x.dtype})
    k.dispatch(k.groups_for(out.size), x, out, n=out.size, h=h, w=w)
    return out


def concat(tensors: Sequence[Tensor], axis: int = 1) -> Tensor:
    """Join tensors along `axis` (all other dimensions equal, one dtype and device).

    numpy: `np.concatenate(tensors, axis)`; torch: `torch.cat(tensors, dim=axis)`.
    """
    op = "concat"
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{op}: needs at least one tensor")
    first = _check_tensor(tensors[0], "tensors[0]", op, 1)
    ndim = first.ndim
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for {ndim}-D tensors")
    axis %= ndim
    for i, t in enumerate(tensors):
        _check_tensor(t, f"tensors[{i}]", op)
        if t.dtype != first.dtype or t.device is not first.device:
            raise TypeError(f"{op}: tensors[{i}] is {t.dtype} on {t.device.name}, tensors[0] "
                            f"is {first.dtype} on {first.device.name}; convert first")
        if t.ndim != ndim or t.shape[:axis] + t.shape[axis + 1:] != \
                first.shape[:axis] + first.shape[axis + 1:]:
            raise ValueError(f"{op}: tensors[{i}] has shape {t.shape}, which differs from "
                             f"{first.shape} outside axis {axis}")
    total = sum(t.shape[axis] for t in tensors)
    shape = (*first.shape[:axis], total, *first.shape[axis + 1:])
    out = Tensor.empty(shape, first.dtype, device=first.device)
    after = int(np.prod(shape[axis + 1:], dtype=np.int64))
    k = kernel("concat", {"T": first.dtype})
    offset = 0
    for t in tensors:
        inner = t.shape[axis] * after
        k.dispatch(k.groups_for(t.size), t, out, n=t.size, inner=max(inner, 1),
                   out_inner=total * after, offset=offset)
        offset += inner
    return out


def pad(x: Tensor, padding: Sequence[int], *, value: float = 0.0) -> Tensor:
    """Constant padding of the last two dimensions; negative amounts crop.

    padding = (left, right, top, bottom), or (left, right) for the last dimension only.
    torch: `F.pad(x, padding, value=value)`.
    """
    op = "pad"
    _check_tensor(x, "x", op, 1)
    padding = tuple(int(p) for p in padding)
    if len(padding) not in (2, 4):
        raise ValueError(f"{op}: padding must be (left, right) or (left, right, top, bottom), "
                         f"got {padding}")
    left, right, top, bottom = (*padding, 0, 0)[:4]
    if len(padding) == 4 and x.ndim < 2:
        raise ValueError(f"{op}: padding 4 values needs a tensor of >= 2 dimensions")
    h, w = (x.shape[-2:] if len(padding) == 4 else (1, x.shape[-1]))
    ho, wo = h + top + bottom, w + left + right
    if ho < 0 or wo < 0:
        raise ValueError(f"{op}: padding {padding} crops more than the size {x.shape}")
    lead = x.shape[:-2] if len(padding) == 4 else x.shape[:-1]
    out = Tensor.empty((*lead, ho, wo) if len(padding) == 4 else (*lead, wo), x.dtype,
                       device=x.device)
    k = kernel("pad", {"T": x.dtype})
    k.dispatch(k.groups_for(out.size), x, out, n=out.size, h=h, w=w, ho=ho, wo=wo, top=top,
               left=left, value=value)
    return out
