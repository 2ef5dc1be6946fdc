"""Built-in layers with torch's (and diffusers') parameter names: Linear, Conv2d, GroupNorm,
LayerNorm, Embedding, GEGLU, Identity. Parameters are allocated uninitialized;
load_state_dict fills them."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device

from .._conv_padding import padding_mode_in_effect
from .._tensor import Tensor
from ..quant import materialize
from ..shape import put_slice
from . import int8_rows as _int8_rows
from . import prologue as _prologue
from ._util import pair
from .activation import geglu, gelu
from .conv import conv2d
from .embedding import embedding
from .int8_linear import Int8Weight, int8_linear, int8_linears
from .linear import linear, linear_geglu, linear_gelu, linears
from .module import Module, parameter
from .norm import group_norm, group_norm_prologue, layer_norm
from .prologue import ConvPrologue, WrittenPrologue, no_prologue
from .quantized_linear import fuses, quantized_linear, quantized_linear_geglu
from .spatial import pad, upsample_nearest2x

__all__ = ["GEGLU", "Conv2d", "Embedding", "GroupNorm", "Identity", "LayerNorm", "Linear"]


class Linear(Module):
    """y = x @ weight.T + bias; weight [out_features, in_features]. torch: nn.Linear."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 dtype: Any = np.float32, device: Device | None = None) -> None:
        self.weight = parameter((out_features, in_features), dtype, device)
        self.bias = parameter((out_features,), dtype, device) if bias else None

    def forward(self, x: Tensor, *, add_to: Tensor | None = None) -> Tensor:
        """add_to: a residual of the output's shape the result is added into in place."""
        if fuses(self.weight, x):  # a Q8_0 / Q4_K / Q5_0 weight the GEMM reads as it is
            return quantized_linear(x, self.weight, self.bias, add_to=add_to)  # type: ignore[arg-type]
        if isinstance(self.weight, Int8Weight):  # W8A8: x quantized per row on the way in
            return int8_linear(x, self.weight, self.bias, add_to=add_to)
        return linear(x, materialize(self.weight), self.bias, add_to=add_to)

    def plain(self) -> bool:
        """Whether this is Linear itself with a float weight and its own forward (not
        quantized, no Residency's unit, no LoRA's wrapped forward): the GEMM may then take
        what follows it (linear_gelu), or others of the same input (linears: Linear.each)."""
        return (type(self) is Linear and type(self.weight) is Tensor
                and "forward" not in vars(self))

    def gelu(self, x: Tensor, *, approximate: str = "none", out: Tensor | None = None,
             start: int = 0) -> Tensor:
        """gelu(self(x)), in the GEMM's epilogue where plain() (linear_gelu); `out`/`start`:
        the result written into out's last-axis slice from `start` (linear_gelu's), out
        returned. torch: `F.gelu(layer(x), approximate=approximate)`."""
        if self.plain():
            return linear_gelu(x, self.weight, self.bias, approximate=approximate, out=out,
                               start=start)
        y = gelu(self(x), approximate=approximate)
        if out is None:
            return y
        put_slice(out, y, start, axis=out.ndim - 1)
        return out

    @staticmethod
    def int8_input(layers: list[Linear]) -> tuple[Tensor | None] | None:
        """(smooth,) where every one of `layers` is a W8A8 Linear (Int8Weight, Linear's own
        forward) and all share one smoothing `smooth` (a tensor, or None): the kernel that
        makes their input may then quantize it for them (gpustd.nn.int8_rows). None
        otherwise, or while int8_rows.FUSED is off."""
        if not _int8_rows.FUSED or any(type(layer) is not Linear or "forward" in vars(layer)
                                       for layer in layers):
            return None
        weights = [layer.weight for layer in layers if isinstance(layer.weight, Int8Weight)]
        if not weights or len(weights) < len(layers) or any(
                weight.smooth is not weights[0].smooth for weight in weights):
            return None
        return (weights[0].smooth,)

    @staticmethod
    def each(x: Tensor, layers: list[Linear]) -> list[Tensor]:
        """[layer(x) for layer in layers], several of them at once where they can: the plain
        ones (plain()) of one weight shape, all with biases or none, through nn.linears (one
        GEMM dispatch on the matrix units: attention's q, k and v; a GQA's k and v), and the
        W8A8 ones (Int8Weight, Linear's own forward) that share a smoothing quantizing x once
        between them (int8_linears; FLUX's single blocks' MLP beside q, k and v). Each result
        is layer(x)'s, bit for bit (nn.linears: on the same tile, K unsplit)."""
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, layer in enumerate(layers):
            if layer.plain():
                key: tuple[Any, ...] = ("float", layer.weight.shape, layer.bias is None)
                groups.setdefault(key, []).append(i)
            elif (type(layer) is Linear and isinstance(layer.weight, Int8Weight)
                    and "forward" not in vars(layer)):
                groups.setdefault(("int8", id(layer.weight.smooth)), []).append(i)
        done: dict[int, Tensor] = {}
        for key, members in groups.items():
            if len(members) < 2:
                continue
            weights = [layers[i].weight for i in members]
            biases = [layers[i].bias for i in members]
            together = (linears(x, weights, biases) if key[0] == "float"  # type: ignore[arg-type]
                        else int8_linears(x, weights, biases))  # type: ignore[arg-type]
            done.update(zip(members, together))
        return [done[i] if i in done else layer(x) for i, layer in enumerate(layers)]


class Conv2d(Module):
    """2-D convolution, weight [out, in/groups, kh, kw]. torch: nn.Conv2d (zero padding;
    circular inside `gpustd.nn.padding_mode("circular")`, torch's padding_mode="circular")."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True, *,
                 dtype: Any = np.float32, device: Device | None = None) -> None:
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: channels {in_channels} -> {out_channels} are not "
                             f"divisible by groups={groups}")
        kh, kw = pair(kernel_size, "kernel_size", "Conv2d", minimum=1)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.weight = parameter((out_channels, in_channels // groups, kh, kw), dtype, device)
        self.bias = parameter((out_channels,), dtype, device) if bias else None

    def forward(self, x: Tensor, *, add: Tensor | None = None,
                prologue: ConvPrologue | None = None, upsample: int = 1) -> Tensor:
        """add: output-shaped or [N, C_out, 1, 1], added in the conv's epilogue. prologue:
        applied to x as it is read (`GroupNorm.prologue`: the norm (+ SiLU) before this conv,
        its output never written). upsample: 2 reads x upsampled 2x (nearest), unwritten."""
        ph, pw = pair(self.padding, "padding", "Conv2d", minimum=0)
        if (ph or pw) and padding_mode_in_effect() == "circular":
            # the input as the conv reads it (normed, upsampled), wrapped around: then no
            # padding of its own
            if prologue is not None:
                x = prologue.apply(x)
            if upsample != 1:
                x = _upsampled(x, upsample)
            return conv2d(pad(x, (pw, pw, ph, ph), mode="circular"), materialize(self.weight),
                          self.bias, stride=self.stride, padding=0, dilation=self.dilation,
                          groups=self.groups, add=add)
        return conv2d(x, materialize(self.weight), self.bias, stride=self.stride,
                      padding=self.padding, dilation=self.dilation, groups=self.groups, add=add,
                      prologue=prologue, upsample=upsample)


def _upsampled(x: Tensor, factor: int) -> Tensor:
    if factor != 2:
        raise ValueError(f"Conv2d: circular padding reads its input upsampled 2x only, got "
                         f"{factor}x")
    return upsample_nearest2x(x)


class GroupNorm(Module):
    """Group normalization over [N, C, ...]; `silu=True` on call fuses the SiLU that
    follows it in SD's ResNet blocks. torch: nn.GroupNorm."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True, *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: {num_channels} channels are not divisible by "
                             f"num_groups={num_groups}")
        self.num_groups, self.eps = num_groups, eps
        self.weight = parameter((num_channels,), dtype, device) if affine else None
        self.bias = parameter((num_channels,), dtype, device) if affine else None

    def forward(self, x: Tensor, *, silu: bool = False) -> Tensor:
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps, silu=silu)

    def prologue(self, x: Tensor, *, silu: bool = False) -> ConvPrologue:
        """This norm (+ SiLU) of x for the next conv to apply as it reads x:
        `conv(x, prologue=norm.prologue(x, silu=True))` is `conv(norm(x, silu=True))` without
        the normalized tensor (gpustd.nn.group_norm_prologue). While
        gpustd.nn.prologue.FUSED is off (the default) the norm is written out here, by
        GroupNorm's own kernels, and the conv reads that."""
        if not _prologue.FUSED:
            written = group_norm(x, self.num_groups, self.weight, self.bias, self.eps, silu=silu)
            return WrittenPrologue(no_prologue(x), silu, written=written, source=x)
        return group_norm_prologue(x, self.num_groups, self.weight, self.bias, self.eps,
                                   silu=silu)


class LayerNorm(Module):
    """Layer normalization over the last dimension. torch: nn.LayerNorm(normalized_shape)."""

    def __init__(self, normalized_shape: Any, eps: float = 1e-5,
                 elementwise_affine: bool = True, *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else \
            tuple(normalized_shape)
        if len(shape) != 1:
            raise ValueError(f"LayerNorm normalizes the last dimension only; got "
                             f"normalized_shape={normalized_shape!r}")
        self.eps = eps
        self.weight = parameter(shape, dtype, device) if elementwise_affine else None
        self.bias = parameter(shape, dtype, device) if elementwise_affine else None

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)

    def quantized_for(self, x: Tensor, readers: list[Linear]) -> Tensor:
        """forward(x) for the linear layers `readers`: where they are W8A8 layers sharing one
        smoothing (Linear.int8_input), an Int8Rows whose int8 rows this norm's pass wrote
        (gpustd.nn.int8_rows; the same values and rows as the separate passes)."""
        found = Linear.int8_input(readers)
        if found is None or "forward" in vars(self):
            return self(x)
        return _int8_rows.layer_norm_int8(x, weight=self.weight, bias=self.bias, eps=self.eps,
                                          smooth=found[0])


class Embedding(Module):
    """A lookup table weight [num_embeddings, embedding_dim]. torch: nn.Embedding."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        self.weight = parameter((num_embeddings, embedding_dim), dtype, device)

    def forward(self, ids: Any) -> Tensor:
        return embedding(ids, self.weight)


class GEGLU(Module):
    """diffusers' GEGLU: proj = Linear(dim_in, 2 * dim_out), then value * gelu(gate) fused.
    diffusers: `diffusers.models.activations.GEGLU`."""

    def __init__(self, dim_in: int, dim_out: int, bias: bool = True, *,
                 approximate: str = "none", dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        self.approximate = approximate
        self.proj = Linear(dim_in, 2 * dim_out, bias, dtype=dtype, device=device)

    def forward(self, x: Tensor) -> Tensor:
        # The gate runs in the projection GEMM's epilogue: one dispatch, no [.., 2D] tensor.
        if fuses(self.proj.weight, x):
            return quantized_linear_geglu(x, self.proj.weight, self.proj.bias,  # type: ignore[arg-type]
                                          approximate=self.approximate)
        if isinstance(self.proj.weight, Int8Weight):  # W8A8 projection, the gate after it
            return geglu(self.proj(x), approximate=self.approximate)
        return linear_geglu(x, materialize(self.proj.weight), self.proj.bias,
                            approximate=self.approximate)

    def quantized_for(self, x: Tensor, readers: list[Linear]) -> Tensor:
        """forward(x) for the linear layers `readers`: where the projection is W8A8 (its gate
        then runs in a pass after it) and they are W8A8 layers sharing one smoothing
        (Linear.int8_input), an Int8Rows whose int8 rows the gate's pass wrote
        (gpustd.nn.int8_rows; the same values and rows as the separate passes). The
        projection's GEMM cannot quantize: a tile sees a few columns of a row, not its
        largest magnitude."""
        found = Linear.int8_input(readers)
        if (found is None or "forward" in vars(self) or fuses(self.proj.weight, x)
                or not isinstance(self.proj.weight, Int8Weight)):
            return self(x)
        return _int8_rows.gelu_int8(self.proj(x), approximate=self.approximate, gated=True,
                                    smooth=found[0])


class Identity(Module):
    """Returns its input (a placeholder that keeps checkpoint indices aligned). torch: same."""

    def forward(self, x: Any) -> Any:
        return x
