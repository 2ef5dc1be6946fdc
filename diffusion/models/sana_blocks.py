"""The Sana transformer's block (diffusers' SanaTransformerBlock) and its parts: linear
self-attention with the ReLU kernel (SanaLinearAttnProcessor2_0), softmax cross-attention to
the caption (SanaAttnProcessor2_0), the GLUMBConv feed-forward (a 1x1 convolution, a
depthwise 3x3 one and a SiLU gate) and the adaLN-single modulation read from one table plus
the timestep's vector."""

from __future__ import annotations

import math
import typing
from typing import Any

import numpy as np

from gpustd import Tensor, elementwise_kernel, matmul, nn, permute
from gpustd.nn.linear import conv1x1_tokens, tokens_conv1x1
from gpustd.quant import materialize

from .layers import Place
from .transformer_ops import Modulation, RMSNorm, gated_add, rms_norm, rope

__all__ = ["GLUMBConv", "SanaCrossAttention", "SanaLinearAttention", "SanaTransformerBlock",
           "linear_attention"]


@elementwise_kernel
def _relu32(x):  # the kernel's feature map, in float32 as diffusers upcasts q and k
    return np.float32(max(float(x), 0.0))


@elementwise_kernel
def _to32(x):
    return np.float32(x)


@elementwise_kernel
def _ratio(num, den):
    return num / (den + 1e-15)


@elementwise_kernel
def _ratio16(num, den):  # float16 out: no cast pass after it
    return np.float16(num / (den + 1e-15))


@elementwise_kernel
def _clip16(x):  # diffusers clips the float16 linear attention's output
    out = float(x)
    return np.float16(out if math.isnan(out) else min(max(out, -65504.0), 65504.0))


def linear_attention(q: Tensor, k: Tensor, v: Tensor, heads: int,
                     rotary: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """ReLU-kernel linear attention of q, k, v (B, N, heads*D), in float32, returned in q's
    dtype: out[n] = sum_m v[m] (k[m] . q[n]) / (sum_m k[m] . q[n] + 1e-15) per head, with
    q, k through ReLU, as two small products (k^T v: D x D, then q (k^T v)) instead of the
    N x N scores. diffusers: `SanaLinearAttnProcessor2_0` (v padded with a row of ones for
    the normaliser: the same sums). rotary: rope_tables' (cos, sin) (N, 1, D), Sana Video's
    3D positions: the ReLU'd q and k rotated in the numerator only, the normaliser keeps
    the unrotated ones (diffusers: `SanaLinearAttnProcessor3_0`)."""
    batch, tokens, width = q.shape
    dim = width // heads

    def split(x: Tensor) -> Tensor:  # (B, N, H*D) -> (B, H, N, D)
        return permute(x.reshape(batch, tokens, heads, dim), (0, 2, 1, 3))

    q32, k32 = typing.cast(Tensor, _relu32(q)), typing.cast(Tensor, _relu32(k))
    qs, ks, v32 = split(q32), split(k32), split(typing.cast(Tensor, _to32(v)))
    qn, kn = (qs, ks) if rotary is None else (split(rope(q32, *rotary, heads)),
                                              split(rope(k32, *rotary, heads)))
    num = matmul(qn, matmul(kn, v32, trans_a=True))  # (B, H, N, D)
    den = matmul(qs, ks.sum(axis=2).reshape(batch, heads, dim, 1))  # (B, H, N, 1)
    out = (_ratio16 if q.dtype == np.float16 else _ratio)(num, den)
    return permute(out, (0, 2, 1, 3)).reshape(batch, tokens, width)


def _qk_norms(qk_norm: str | None, width: int, place: Place
              ) -> tuple[RMSNorm | None, RMSNorm | None]:
    """(norm_q, norm_k): RMS norms (eps 1e-5) over all the heads together for
    "rms_norm_across_heads" (Sana 1.5, Sprint), none for None (Sana 1.0)."""
    if not qk_norm:
        return None, None
    return RMSNorm(width, 1e-5, place=place), RMSNorm(width, 1e-5, place=place)


def _normed(norm: RMSNorm | None, x: Tensor) -> Tensor:
    return x if norm is None else rms_norm(x, norm.weight, norm.eps)


class SanaLinearAttention(nn.Module):
    """attn1: to_q/to_k/to_v (biases where `attention_bias`), optional q/k norms, linear
    attention, to_out.0 (with a bias), float16 output clipped to +-65504. diffusers:
    `Attention(processor=SanaLinearAttnProcessor2_0())`."""

    def __init__(self, dim: int, heads: int, head_dim: int, bias: bool, qk_norm: str | None,
                 place: Place) -> None:
        self.heads, inner = heads, heads * head_dim
        self.to_q = nn.Linear(dim, inner, bias, **place)
        self.to_k = nn.Linear(dim, inner, bias, **place)
        self.to_v = nn.Linear(dim, inner, bias, **place)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim, **place)])
        self.norm_q, self.norm_k = _qk_norms(qk_norm, inner, place)

    def heads_out(self, x: Tensor) -> Tensor:
        """The attention before to_out (B, N, heads*D), x's dtype."""
        q, k, v = nn.Linear.each(x, [self.to_q, self.to_k, self.to_v])
        return linear_attention(_normed(self.norm_q, q), _normed(self.norm_k, k), v,
                                self.heads)

    def forward(self, x: Tensor) -> Tensor:
        out = self.to_out[0](self.heads_out(x))
        return typing.cast(Tensor, _clip16(out)) if out.dtype == np.float16 else out


class SanaCrossAttention(nn.Module):
    """attn2: softmax attention of the image tokens to the caption's, its padding masked;
    every projection with a bias, optional q/k norms. diffusers: `Attention(processor=
    SanaAttnProcessor2_0())`."""

    def __init__(self, dim: int, context_dim: int, heads: int, head_dim: int,
                 qk_norm: str | None, place: Place) -> None:
        self.heads, inner = heads, heads * head_dim
        self.to_q = nn.Linear(dim, inner, **place)
        self.to_k = nn.Linear(context_dim, inner, **place)
        self.to_v = nn.Linear(context_dim, inner, **place)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim, **place)])
        self.norm_q, self.norm_k = _qk_norms(qk_norm, inner, place)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None) -> Tensor:
        """x (B, N, dim), context (B, L, dim); mask (B, 1, 1, L) float32 added to the
        scores (0 kept, -10000 padding, as diffusers' bias), None for none."""
        q = _normed(self.norm_q, self.to_q(x))
        k, v = nn.Linear.each(context, [self.to_k, self.to_v])
        out = nn.attention(q, _normed(self.norm_k, k), v, mask=mask, heads=self.heads)
        return self.to_out[0](out)


class GLUMBConv(nn.Module):
    """conv_inverted (1x1, dim -> 2 * inner, bias), SiLU, conv_depth (depthwise 3x3, padding
    1, bias), the first half times SiLU of the second, conv_point (1x1, inner -> dim, no
    bias); tokens in and out, the convolutions over the (H, W) grid. diffusers:
    `GLUMBConv(dim, dim, mlp_ratio, norm_type=None, residual_connection=False)`."""

    def __init__(self, dim: int, mlp_ratio: float, place: Place) -> None:
        inner = int(mlp_ratio * dim)
        self.conv_inverted = nn.Conv2d(dim, 2 * inner, 1, **place)
        self.conv_depth = nn.Conv2d(2 * inner, 2 * inner, 3, padding=1, groups=2 * inner,
                                    **place)
        self.conv_point = nn.Conv2d(inner, dim, 1, bias=False, **place)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        """x (B, H*W, dim) -> (B, H*W, dim)."""
        inverted, depth = self.conv_inverted, self.conv_depth
        y = tokens_conv1x1(x, materialize(inverted.weight), inverted.bias, height, width)
        # the SiLU, the depthwise conv and the gate in one pass (a grouped conv2d would fill
        # a GEMM tile's 64 rows with one channel's)
        gated = nn.depthwise_glu(y, depth.weight, depth.bias, silu_input=True)
        return conv1x1_tokens(gated, materialize(self.conv_point.weight))


class SanaTransformerBlock(nn.Module):
    """Linear self-attention on the modulated norm of x, gated; cross-attention to the
    caption added (no norm before it, no gate); GLUMBConv on the modulated norm, gated. The
    six modulation vectors are `scale_shift_table` (6, dim) plus the timestep's (B, 6*dim):
    (shift, scale, gate) for the attention, then for the feed-forward. diffusers:
    `SanaTransformerBlock`."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        self.dim, self.eps = dim, cfg["norm_eps"]
        self.attn1 = SanaLinearAttention(dim, cfg["num_attention_heads"],
                                         cfg["attention_head_dim"], cfg["attention_bias"],
                                         cfg["qk_norm"], place)
        self.attn2 = SanaCrossAttention(dim, cfg["cross_attention_dim"],
                                        cfg["num_cross_attention_heads"],
                                        cfg["cross_attention_head_dim"], cfg["qk_norm"], place)
        self.ff = GLUMBConv(dim, cfg["mlp_ratio"], place)
        self.scale_shift_table = nn.parameter((6, dim), **place)

    def forward(self, x: Tensor, temb: Tensor, context: Tensor, mask: Tensor | None,
                height: int, width: int) -> Tensor:
        """x (B, H*W, dim); temb (B, 6*dim) (time_embed's linear output); context
        (B, L, dim) the normed caption; mask as SanaCrossAttention's."""
        batch = x.shape[0]
        table = self.scale_shift_table.reshape(1, 6, self.dim)
        mods = Modulation((table + temb.reshape(batch, 6, self.dim)).reshape(batch, -1), 6)
        attn = self.attn1.heads_out(mods.norm(x, 0, 1, self.eps))
        # to_out's GEMM applies the gate and the residual where it can (float16: its float32
        # sums are not clipped first, as diffusers clips them, which matters only past 65504)
        x = mods.gated_linear(2, x, self.attn1.to_out[0], attn)
        x = x + self.attn2(x, context, mask)
        ff = self.ff(mods.norm(x, 3, 4, self.eps), height, width)
        return gated_add(x, mods[5], ff)
