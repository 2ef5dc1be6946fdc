"""Data movement of the UNet/VAE: upsample_nearest2x, concat, pad, max_pool2d (NCHW)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._tensor import Tensor
from ..elementwise import maximum
from ..shape import concatenate
from ._util import kernel

__all__ = ["concat", "max_pool2d", "pad", "upsample_nearest2x"]


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


def pad(x: Tensor, padding: Sequence[int], *, value: float = 0.0,
        mode: str = "constant") -> Tensor:
    """Padding of the last two dimensions; negative amounts crop.

    padding = (left, right, top, bottom), or (left, right) for the last dimension only.
    mode "constant" fills with `value`; "reflect" mirrors about the edge (each amount
    0..size - 1); "circular" wraps around to the opposite edge (each amount 0..size);
    "replicate" repeats the edge rows and columns (each amount >= 0). torch: `F.pad(x,
    padding, mode, value)` (nn.ReflectionPad2d for "reflect").
    """
    op = "pad"
    _check_tensor(x, "x", op, 1)
    padding = tuple(int(p) for p in padding)
    if len(padding) not in (2, 4):
        raise ValueError(f"{op}: padding must be (left, right) or (left, right, top, bottom), "
                         f"got {padding}")
    if mode not in ("constant", "reflect", "circular", "replicate"):
        raise ValueError(f"{op}: mode must be 'constant', 'reflect', 'circular' or "
                         f"'replicate', got {mode!r}")
    left, right, top, bottom = (*padding, 0, 0)[:4]
    if len(padding) == 4 and x.ndim < 2:
        raise ValueError(f"{op}: padding 4 values needs a tensor of >= 2 dimensions")
    h, w = (x.shape[-2:] if len(padding) == 4 else (1, x.shape[-1]))
    ho, wo = h + top + bottom, w + left + right
    if ho < 0 or wo < 0:
        raise ValueError(f"{op}: padding {padding} crops more than the size {x.shape}")
    if mode == "reflect" and not (0 <= min(padding) and max(left, right) < w
                                  and max(top, bottom) < h):
        raise ValueError(f"{op}: reflect padding {padding} must be 0..size - 1 on each side "
                         f"of the size {x.shape}")
    if mode == "circular" and not (0 <= min(padding) and max(left, right) <= w
                                   and max(top, bottom) <= h):
        raise ValueError(f"{op}: circular padding {padding} must be 0..size on each side of "
                         f"the size {x.shape}")
    if mode == "replicate" and (min(padding) < 0 or h == 0 or w == 0):
        raise ValueError(f"{op}: replicate padding {padding} must be >= 0 on each side of a "
                         f"non-empty size {x.shape}")
    lead = x.shape[:-2] if len(padding) == 4 else x.shape[:-1]
    out = Tensor.empty((*lead, ho, wo) if len(padding) == 4 else (*lead, wo), x.dtype,
                       device=x.device)
    k = kernel("pad", {"T": x.dtype}, REFLECT=int(mode == "reflect"),
               CIRCULAR=int(mode == "circular"), REPLICATE=int(mode == "replicate"))
    k.dispatch(k.groups_for(out.size), x, out, n=out.size, h=h, w=w, ho=ho, wo=wo, top=top,
               left=left, value=value)
    return out


def max_pool2d(x: Tensor, size: int = 2) -> Tensor:
    """The largest of each size x size block of the last two dimensions (stride = size, the
    rows and columns past the last whole block dropped): [..., H, W] -> [..., H // size,
    W // size]. torch: `F.max_pool2d(x, size)`."""
    _check_tensor(x, "x", "max_pool2d", 2)
    h, w = (x.shape[-2] // size) * size, (x.shape[-1] // size) * size
    if h == 0 or w == 0:
        raise ValueError(f"max_pool2d: {x.shape[-2]}x{x.shape[-1]} is smaller than the "
                         f"{size}x{size} window")
    out = x[..., 0:h:size, 0:w:size]
    for dy in range(size):
        for dx in range(size):
            if dy or dx:
                out = maximum(out, x[..., dy:h:size, dx:w:size])
    return out
