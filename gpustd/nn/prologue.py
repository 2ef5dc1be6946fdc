"""What a conv does to each input value as it reads it: GroupNorm (+ SiLU) folded into the
conv's patch gather, so the normalized activation is never written (gpustd.nn.conv2d's
`prologue`, made by gpustd.nn.group_norm_prologue).

The conv reads y = (x - x0[n, c]) * scale[n, c] + shift[n, c], then SiLU when `silu`, for
every value inside the image; the zero padding around the image stays zero (the conv pads
y, as conv2d(silu(group_norm(x)), padding=...) does, not y of a zero). The table is float32
whatever x's dtype: (x0, scale, shift, 0) per (image, channel), x0 a value of the channel's
group (the statistics' origin: it keeps a large common offset from costing digits)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._tensor import Tensor
from ._util import kernel

__all__ = ["FUSED", "ConvPrologue", "WrittenPrologue", "no_prologue"]

# Whether the prologue runs in the conv's gather (True) or is written out first (False, the
# default). Fused, the normalized activation is never stored (SD 1.5's VAE decode peak: -64
# MiB), but every gathered value pays the map and SiLU's exp again: a 3x3 implicit-GEMM conv
# reads each input value 9 times per output-channel tile. Measured, one process, alternated
# (H100, Dawn, SD 1.5 UNet step f16 replayed, bench/NOTES.md): fused 44.3 ms against 30.6-31.4
# written out, the same bits; on lavapipe a bundled-model picture ~8% more CPU. So it is off
# unless set (`gpustd.nn.prologue.FUSED = True`; bench: BENCH_CONV_PROLOGUE=1).
FUSED = False


@dataclass(frozen=True, eq=False)  # holds Tensors, whose == is elementwise: compared by identity
class ConvPrologue:
    """table: float32 [N, C, 4] of (x0, scale, shift, 0) for the conv's input [N, C, H, W];
    silu: apply x * sigmoid(x) after the affine map. 1 (PROLOGUE override) for the map
    alone, 2 with SiLU (`kind`)."""

    table: Tensor
    silu: bool = False

    @property
    def kind(self) -> int:
        return 2 if self.silu else 1

    def apply(self, x: Tensor) -> Tensor:
        """x mapped as a conv reads it (its padding aside): a tensor of x's shape and dtype.
        torch: `F.silu(F.group_norm(x, ...))` for a group_norm_prologue."""
        self.check("ConvPrologue.apply", x)
        out = Tensor.empty(x.shape, x.dtype, device=x.device)
        if out.size:
            k = kernel("conv_prologue_apply", {"T": x.dtype}, SILU=int(self.silu))
            k.dispatch(k.groups_for(out.size), x, self.table, out, n=out.size,
                       hw=out.size // (x.shape[0] * x.shape[1]))
        return out

    def check(self, op: str, x: Tensor) -> None:
        """A ValueError unless this prologue was made for x's images and channels."""
        table = self.table
        if table.dtype != np.float32 or table.shape != (*x.shape[:2], 4):
            raise ValueError(f"{op}: the prologue's table is {table.dtype} {table.shape}, but "
                             f"x {x.shape} needs float32 {(*x.shape[:2], 4)}: make it from "
                             f"this x (gpustd.nn.group_norm_prologue(x, ...))")
        if table.device is not x.device:
            raise ValueError(f"{op}: the prologue is on {table.device.name}, x on "
                             f"{x.device.name}")


@dataclass(frozen=True, eq=False)
class WrittenPrologue(ConvPrologue):
    """A prologue already written out: `written` is the norm's (+ SiLU's) output for the
    tensor `source`, made by GroupNorm's own kernels (what GroupNorm.prologue gives while
    FUSED is off: the same kernels and bits as `conv(norm(x))`, no table). `table` is the
    placeholder no_prologue; a conv given it reads `written`."""

    written: Tensor | None = None
    source: Tensor | None = None

    def apply(self, x: Tensor) -> Tensor:
        self.check("ConvPrologue.apply", x)
        assert self.written is not None
        return self.written

    def check(self, op: str, x: Tensor) -> None:
        if x is not self.source:
            raise ValueError(f"{op}: this prologue was made for another tensor than x "
                             f"{x.shape}: make it from this x (norm.prologue(x))")


def no_prologue(x: Tensor) -> Tensor:
    """The table bound where a conv has no prologue (one entry: a binding holds at least one
    vec4)."""
    return x.device.keep(("nn no prologue",),
                         lambda: Tensor.zeros((1, 1, 4), np.float32, device=x.device))
