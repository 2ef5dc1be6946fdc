"""The Lumina Image 2.0 transformer's block (diffusers' Lumina2TransformerBlock, its
attention and feed-forward): Z-Image's block (models.z_image_blocks: sandwich RMS norms, a
tanh-gated adaLN) under diffusers' Lumina names, with grouped-query attention, key masks for
ragged captions, and an adaLN that reads silu(temb) through a linear with a bias."""

from __future__ import annotations

import typing
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, nn

from .layers import Place
from .llm_layers import repeat_kv
from .transformer_ops import Modulation, RMSNorm, cast, norm_rope
from .z_image_blocks import _gated, _norm_scaled, _swiglu, _swiglu_clipped

__all__ = ["Lumina2TransformerBlock", "ffn_width"]


def ffn_width(dim: int, multiple_of: int, multiplier: float | None) -> int:
    """The feed-forward's inner width: 4 * dim, times `ffn_dim_multiplier` where set, rounded
    up to a multiple of `multiple_of`. diffusers: `LuminaFeedForward.__init__`."""
    inner = 4 * dim
    if multiplier is not None:
        inner = int(multiplier * inner)
    return multiple_of * ((inner + multiple_of - 1) // multiple_of)


class Lumina2Attention(nn.Module):
    """Self-attention with per-head RMS norms of q and k (eps 1e-5), interleaved-pair RoPE and
    `kv_heads` key/value heads each shared by heads / kv_heads query heads; no biases.
    diffusers: `Attention` with `Lumina2AttnProcessor2_0` (no proportional attention: the
    transformer passes no base_sequence_length)."""

    def __init__(self, dim: int, heads: int, kv_heads: int, place: Place) -> None:
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.to_q = nn.Linear(dim, dim, bias=False, **place)
        self.to_k = nn.Linear(dim, kv_heads * self.head_dim, bias=False, **place)
        self.to_v = nn.Linear(dim, kv_heads * self.head_dim, bias=False, **place)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, bias=False, **place)])
        self.norm_q = RMSNorm(self.head_dim, 1e-5, place=place)
        self.norm_k = RMSNorm(self.head_dim, 1e-5, place=place)
        self._group_shape: dict[Device, Tensor] = {}

    def _norm_rope(self, norm: RMSNorm, x: Tensor, rotary: tuple[Tensor, Tensor], heads: int
                   ) -> Tensor:
        """norm_rope over x (B, L, heads*D) with tables of B * L rows (each picture's own
        positions: the batch folded into the tokens, a free reshape)."""
        batch, length, width = x.shape
        out = norm_rope(norm, x.reshape(1, batch * length, width), rotary, heads)
        return out.reshape(batch, length, width)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor], keep: Tensor | None) -> Tensor:
        """x (B, L, dim); rotary: cos/sin (B * L, 1, head_dim); keep: the keys' additive mask
        (B, 1, 1, L) float32 (0 kept, -inf dropped), None for all kept."""
        q, k, v = nn.Linear.each(x, [self.to_q, self.to_k, self.to_v])
        q = self._norm_rope(self.norm_q, q, rotary, self.heads)
        k = self._norm_rope(self.norm_k, k, rotary, self.kv_heads)
        k, v = repeat_kv(k, v, self.heads, self.kv_heads, self._group_shape)
        return self.to_out[0](nn.attention(q, k, v, mask=keep, heads=self.heads))


class Lumina2FeedForward(nn.Module):
    """linear_2(silu(linear_1 x) * linear_3 x), the product clipped to +-65504 under float16
    (as Z-Image's). diffusers: `LuminaFeedForward`."""

    def __init__(self, dim: int, inner: int, place: Place) -> None:
        self.linear_1 = nn.Linear(dim, inner, bias=False, **place)
        self.linear_2 = nn.Linear(inner, dim, bias=False, **place)
        self.linear_3 = nn.Linear(dim, inner, bias=False, **place)

    def forward(self, x: Tensor) -> Tensor:
        kernel = _swiglu_clipped if x.dtype == np.float16 else _swiglu
        gated = typing.cast(Tensor, kernel(self.linear_1(x), self.linear_3(x)))
        return self.linear_2(cast(gated, x.dtype))


class Lumina2RMSNormZero(nn.Module):
    """The modulated block's first norm: `linear` (silu(temb) -> scale_msa, gate_msa,
    scale_mlp, gate_mlp) and `norm`, the RMS norm its scale multiplies. diffusers:
    `LuminaRMSNormZero`."""

    def __init__(self, dim: int, eps: float, place: Place) -> None:
        self.linear = nn.Linear(min(dim, 1024), 4 * dim, **place)
        self.norm = RMSNorm(dim, eps, place=place)


class Lumina2TransformerBlock(nn.Module):
    """Sandwich-normed attention and feed-forward (an RMS norm before and after each); with
    `modulation`, the inputs scaled by 1 + scale and the residual writes gated by tanh(gate)
    (`norm1` a Lumina2RMSNormZero, else a plain RMS norm)."""

    def __init__(self, cfg: dict[str, Any], place: Place, *, modulation: bool) -> None:
        dim, eps = cfg["hidden_size"], cfg["norm_eps"]
        self.attn = Lumina2Attention(dim, cfg["num_attention_heads"], cfg["num_kv_heads"], place)
        self.feed_forward = Lumina2FeedForward(
            dim, ffn_width(dim, cfg["multiple_of"], cfg["ffn_dim_multiplier"]), place)
        self.modulation = modulation
        self.norm1: Any = (Lumina2RMSNormZero(dim, eps, place) if modulation
                           else RMSNorm(dim, eps, place=place))
        self.ffn_norm1 = RMSNorm(dim, eps, place=place)
        self.norm2 = RMSNorm(dim, eps, place=place)
        self.ffn_norm2 = RMSNorm(dim, eps, place=place)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor], keep: Tensor | None,
                temb: Tensor | None = None) -> Tensor:
        """x (B, L, dim); temb (B, min(dim, 1024)) for a modulated block (None otherwise)."""
        if not self.modulation:
            x = x + self.norm2(self.attn(self.norm1(x), rotary, keep))
            return x + self.ffn_norm2(self.feed_forward(self.ffn_norm1(x)))
        assert temb is not None, "a modulated block needs the timestep embedding"
        # (scale_msa, gate_msa, scale_mlp, gate_mlp): the norms read their scales in place
        mods = Modulation(self.norm1.linear(nn.silu(temb)), 4)
        attn = self.attn(_norm_scaled(self.norm1.norm, x, mods, 0), rotary, keep)
        x = _gated(x, mods[1], self.norm2(attn))
        ff = self.feed_forward(_norm_scaled(self.ffn_norm1, x, mods, 2))
        return _gated(x, mods[3], self.ffn_norm2(ff))
