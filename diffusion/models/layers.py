"""Building blocks shared by the UNet and the VAE (diffusers' names for every attribute)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from gpucore import Device
from gpustd import Tensor, nn
from gpustd.shape import permute, take_slice

# Every model takes `dtype` and `device` and hands them to each layer as `**place`.
Place = dict[str, Any]

# What cross-attention attends to: the text tokens (B, L, D), or with IP-Adapters installed
# (diffusion.models.ip_adapter) those and a list of each adapter's image tokens.
Context = Tensor | tuple[Tensor, list[Tensor]]


def to_tokens(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H*W, C)."""
    b, c, h, w = x.shape
    return permute(x, (0, 2, 3, 1)).reshape(b, h * w, c)


def to_image(x: Tensor, height: int, width: int) -> Tensor:
    """(B, H*W, C) -> (B, C, H, W)."""
    b, _, c = x.shape
    return permute(x.reshape(b, height, width, c), (0, 3, 1, 2))


class ProjOutPlace:
    """A transformer's `device` and `dtype`: its output projection's (`proj_out`), which every
    call's inputs are cast to (diffusers' ModelMixin reads its parameters')."""

    proj_out: nn.Linear

    @property
    def device(self) -> Device:
        return self.proj_out.weight.device

    @property
    def dtype(self) -> np.dtype:
        return self.proj_out.weight.dtype


class ImageKeysValues(Protocol):
    """One IP-Adapter's projections of its image tokens for one attention layer
    (diffusion.models.ip_adapter installs them as the layer's `ip_layers`)."""

    to_k_ip: nn.Linear
    to_v_ip: nn.Linear


class Attention(nn.Module):
    """Multi-head attention with diffusers' parameter names (to_q, to_k, to_v, to_out.0)."""

    # Set on some instances only: the VAE's attentions (diffusion.models.vae) and the UNet's
    # cross-attention layers while IP-Adapters are installed (diffusion.models.ip_adapter).
    group_norm: nn.GroupNorm
    ip_layers: list[ImageKeysValues]

    def __init__(self, query_dim: int, heads: int, dim_head: int, *, place: Place,
                 context_dim: int | None = None, qkv_bias: bool = False) -> None:
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=qkv_bias, **place)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=qkv_bias, **place)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=qkv_bias, **place)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim, **place)])

    def forward(self, x: Tensor, context: Any = None, *,
                add_to: Tensor | None = None) -> Tensor:
        """x: (B, L, query_dim); context: (B, Lk, context_dim) or None (self-attention).

        IP-Adapter (diffusion.models.ip_adapter): context (text, [image tokens per adapter]),
        and `ip_layers` (set on the UNet's cross-attention layers by `install`) adds
        attn(q, to_k_ip(tokens), to_v_ip(tokens)) per adapter before to_out (the adapter's
        scale is in its to_v_ip), as diffusers' IPAdapterAttnProcessor2_0.

        add_to: the residual stream (B, L, query_dim), updated in place by to_out's GEMM."""
        return self.to_out[0](self.attend(x, context), add_to=add_to)

    def attend(self, x: Tensor, context: Any = None) -> Tensor:
        """The heads' output before to_out (B, L, heads * dim_head); arguments as forward."""
        image_tokens: Any = ()
        if isinstance(context, tuple):
            context, image_tokens = context
        if context is None:  # self-attention: q, k and v of x in one GEMM where it can
            q, k, v = nn.Linear.each(x, [self.to_q, self.to_k, self.to_v])
        else:  # k and v of the context in one
            q = self.to_q(x)
            k, v = nn.Linear.each(context, [self.to_k, self.to_v])
        out = nn.attention(q, k, v, heads=self.heads)
        for layer, tokens in zip(getattr(self, "ip_layers", ()), image_tokens):
            out = out + nn.attention(q, layer.to_k_ip(tokens), layer.to_v_ip(tokens),
                                     heads=self.heads)
        return out


class ResnetBlock2D(nn.Module):
    """GroupNorm-SiLU-conv twice, plus a projected time embedding and a shortcut."""

    def __init__(self, in_channels: int, out_channels: int, *, temb_channels: int | None,
                 place: Place, groups: int = 32, eps: float = 1e-5,
                 shortcut_last: bool = False) -> None:
        # shortcut_last: a projected shortcut (conv_shortcut) takes conv2's output into its
        # epilogue, rather than conv2 the shortcut: conv1's output is dead by then, so the
        # block holds x and two outputs at most, not three (the VAE's 512 px resnet 256 -> 128
        # channels: 256 instead of 320 MiB at float16). The UNet keeps the other order, where
        # a plain 1x1 shortcut runs as a GEMM.
        self.shortcut_last = shortcut_last
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps, **place)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, **place)
        self.time_emb_proj = (nn.Linear(temb_channels, out_channels, **place)
                              if temb_channels else None)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps, **place)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, **place)
        self.conv_shortcut = (nn.Conv2d(in_channels, out_channels, 1, **place)
                              if in_channels != out_channels else None)

    def forward(self, x: Tensor, temb_act: Tensor | None = None, *,
                inner: Callable[[Tensor], Any] | None = None) -> Tensor:
        """x: (B, C, H, W); temb_act: silu(time embedding), (B, temb_channels); `inner` is
        given conv1's output (diffusion.models.vae_half reads its magnitude)."""
        # Each GroupNorm + SiLU runs in its conv's input (a prologue: only the statistics
        # pass runs before the conv, no normalized tensor exists), and the time embedding
        # and the shortcut are added in the convs' epilogues.
        t = None
        if temb_act is not None and self.time_emb_proj is not None:
            t = self.time_emb_proj(temb_act)
            t = t.reshape(*t.shape, 1, 1)
        h = self.conv1(x, prologue=self.norm1.prologue(x, silu=True), add=t)
        if inner is not None:
            inner(h)
        if self.shortcut_last and self.conv_shortcut is not None:
            h = self.conv2(h, prologue=self.norm2.prologue(h, silu=True))
            return self.conv_shortcut(x, add=h)
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return self.conv2(h, prologue=self.norm2.prologue(h, silu=True), add=shortcut)


class Downsample2D(nn.Module):
    """Stride-2 3x3 conv. The VAE pads (0, 1, 0, 1) itself and convolves with padding 0."""

    def __init__(self, channels: int, *, place: Place, padding: int = 1) -> None:
        self.pad_input = padding == 0
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding, **place)

    def forward(self, x: Tensor) -> Tensor:
        if self.pad_input:
            x = nn.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample2D(nn.Module):
    """Nearest 2x upsampling followed by a 3x3 conv, in one: the conv reads x upsampled (the
    VAE's last upsampler would hold a 128 MiB upsampled copy at 512 px, float16)."""

    def __init__(self, channels: int, *, place: Place) -> None:
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, **place)

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """`size`: the (height, width) to upsample to where it is not twice x's (the UNet's
        skip at a latent side that is not a multiple of its overall factor): x upsampled, the
        rows and columns past `size` dropped, then the conv. diffusers: `Upsample2D(x,
        output_size=size)` (nearest to 2n - 1 drops the last of 2n)."""
        if size is None or tuple(size) == (2 * x.shape[-2], 2 * x.shape[-1]):
            return self.conv(x, upsample=2)
        up = nn.upsample_nearest2x(x)
        up = take_slice(take_slice(up, 0, size[0], axis=2), 0, size[1], axis=3)
        return self.conv(up)
