"""Data movement of the UNet/VAE: upsample_nearest2x, concat, pad (NCHW)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._tensor import Tensor
from ..shape import concatenate
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
    """Join tensors along `axis` (channels by default, as the UNet's skip connections need).

    gpustd.concatenate with an NCHW default. torch: `torch.cat(tensors, dim=axis)`.
    """
    return concatenate(tensors, axis)


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
