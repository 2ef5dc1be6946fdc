"""The UNet's transformer and down/up blocks (diffusers' names for every attribute)."""

from __future__ import annotations

import typing
from typing import Protocol

from gpustd import Tensor, nn
from gpustd.nn.linear import conv1x1_tokens, tokens_conv1x1
from gpustd.quant import materialize

from .layers import Attention, Context, Place, ResnetBlock2D

__all__ = ["BasicTransformerBlock", "FeedForward", "Transformer2DModel", "UNetBlock"]


class FeedForward(nn.Module):
    """GEGLU feed-forward: net.0.proj (dim -> 2*inner), gelu gate, net.2 (inner -> dim)."""

    def __init__(self, dim: int, *, place: Place, mult: int = 4) -> None:
        inner = dim * mult
        self.net = nn.ModuleList([nn.GEGLU(dim, inner, **place), nn.Identity(),
                                  nn.Linear(inner, dim, **place)])

    def input_layers(self) -> list[nn.Linear]:
        """The layers that read forward's x."""
        return [typing.cast(nn.GEGLU, self.net[0]).proj]

    def forward(self, x: Tensor, *, add_to: Tensor | None = None) -> Tensor:
        """add_to: the residual stream, updated in place by net.2's GEMM. Under --int8 the
        gate's pass quantizes its rows for net.2 (nn.GEGLU.quantized_for)."""
        gate, out = typing.cast(nn.GEGLU, self.net[0]), typing.cast(nn.Linear, self.net[2])
        return out(gate.quantized_for(x, [out]), add_to=add_to)


class SelfAttentionHook(Protocol):
    """What replaces a block's self-attention while installed (diffusion.models.
    reference_attention): adds the attention of `normed` (norm1's output) to x in place."""

    def self_attention(self, attention: Attention, normed: Tensor, x: Tensor) -> None: ...


class BasicTransformerBlock(nn.Module):
    """Self-attention, cross-attention to the text context, feed-forward; pre-LayerNorm."""

    # Set while the ControlNet extension's reference_only runs (diffusion.models.
    # reference_attention): the block's self-attention then also sees saved tokens.
    reference: SelfAttentionHook | None = None

    def __init__(self, dim: int, heads: int, context_dim: int, *, place: Place) -> None:
        self.norm1 = nn.LayerNorm(dim, **place)
        self.attn1 = Attention(dim, heads, dim // heads, place=place)
        self.norm2 = nn.LayerNorm(dim, **place)
        self.attn2 = Attention(dim, heads, dim // heads, context_dim=context_dim, place=place)
        self.norm3 = nn.LayerNorm(dim, **place)
        self.ff = FeedForward(dim, place=place)

    def forward(self, x: Tensor, context: Context) -> Tensor:
        """Updates the residual stream x (B, L, dim) IN PLACE and returns it: each residual
        add happens in the epilogue of the GEMM before it."""
        # Under --int8 each norm's pass quantizes its rows for the W8A8 layers that read them
        # (nn.LayerNorm.quantized_for): attn1's q, k and v, attn2's q, the feed-forward's.
        if self.reference is None:
            attn1 = self.attn1
            self.attn1(self.norm1.quantized_for(x, [attn1.to_q, attn1.to_k, attn1.to_v]),
                       add_to=x)
        else:
            self.reference.self_attention(self.attn1, self.norm1(x), x)
        self.attn2(self.norm2.quantized_for(x, [self.attn2.to_q]), context, add_to=x)
        return self.ff(self.norm3.quantized_for(x, self.ff.input_layers()), add_to=x)


class Transformer2DModel(nn.Module):
    """GroupNorm, projection to tokens (1x1 conv or linear), `depth` transformer blocks, back."""

    # Read as NCHW GEMMs by forward itself, never through Linear: --int8 leaves them float.
    float_linears = ("proj_in", "proj_out")

    def __init__(self, channels: int, heads: int, context_dim: int, *, depth: int,
                 linear_projection: bool, groups: int, place: Place) -> None:
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6, **place)

        def project() -> nn.Linear | nn.Conv2d:
            if linear_projection:
                return nn.Linear(channels, channels, **place)
            return nn.Conv2d(channels, channels, 1, **place)

        self.proj_in = project()
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(channels, heads, context_dim, place=place)
             for _ in range(depth)])
        self.proj_out = project()

    def forward(self, x: Tensor, context: Context) -> Tensor:
        _, _, height, width = x.shape
        # proj_in/proj_out (1x1 conv or linear: the same GEMM) read and write NCHW directly,
        # so no permute runs; the blocks own h, their residual stream. proj_out adds into x
        # in its epilogue: x is the resnet output the UNet hands over and keeps no other way.
        h = conv1x1_tokens(self.norm(x), materialize(self.proj_in.weight), self.proj_in.bias)
        for block in self.transformer_blocks:
            h = block(h, context)
        return tokens_conv1x1(h, materialize(self.proj_out.weight), self.proj_out.bias, height,
                              width, add_to=x)


class UNetBlock(nn.Module):
    """A down or up block: resnets, optional transformers, optional resampler.

    `sampler_name` is "downsamplers" or "upsamplers", the attribute diffusers stores it under.
    """

    def __init__(self, resnets: list[ResnetBlock2D], attentions: list[Transformer2DModel] | None,
                 sampler: nn.Module | None, sampler_name: str) -> None:
        self.resnets = nn.ModuleList(resnets)
        if attentions is not None:
            self.attentions = nn.ModuleList(attentions)
        self._sampler_name = sampler_name
        if sampler is not None:
            setattr(self, sampler_name, nn.ModuleList([sampler]))

    def sampler(self) -> nn.Module | None:
        found = getattr(self, self._sampler_name, None)
        return found[0] if found is not None else None

    def attention(self, i: int) -> Transformer2DModel | None:
        attentions = getattr(self, "attentions", None)
        return attentions[i] if attentions is not None else None
