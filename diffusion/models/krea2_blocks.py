"""The Krea 2 transformer's layers (diffusers' names, transformer_krea2.py): the zero-centred
RMS norm, the grouped-query attention with its sigmoid output gate, the SwiGLU feed-forward,
the text fusion's plain pre-norm block, the text projection, the modulated single-stream block
and the final layer. The model (models.krea2) puts them together."""

from __future__ import annotations

import math
import typing

import numpy as np

from gpucore import Device
from gpustd import Tensor, elementwise_kernel, empty, nn

from .flux2 import swiglu
from .layers import Place
from .transformer_ops import Modulation, cast

__all__ = ["Krea2Attention", "Krea2FinalLayer", "Krea2RMSNorm", "Krea2SwiGLU",
           "Krea2TextFusionBlock", "Krea2TextProjection", "Krea2TransformerBlock"]


@elementwise_kernel
def _gated_heads(heads, gate):
    return float(heads) / (1.0 + math.exp(-float(gate)))


@elementwise_kernel
def _gated_heads_f16(heads, gate):  # float16 out: the cast pass after _gated_heads, the same bits
    return np.float16(float(heads) / (1.0 + math.exp(-float(gate))))


@elementwise_kernel
def _residual(stream, y):  # the float32 stream plus a float16 or float32 write, one pass
    return stream + float(y)


@elementwise_kernel
def _broadcast(k, v, like):  # k and v repeated over like's shape (like's values unused)
    return k, v


class Krea2RMSNorm(nn.Module):
    """RMS norm whose scale is 1 + weight (the checkpoint stores the scale's offset from 1),
    statistics and scale in float32, the result in x's dtype. The weight stays float32
    whatever the model's dtype: float16 would round the offset before the + 1. The kernels
    add the 1 as they read the weight (`zero_centred`): no scale tensor is made or kept, which
    a loader or an offload replacing the weight would leave stale. diffusers: `Krea2RMSNorm`
    (kept in float32 by `_keep_in_fp32_modules`)."""

    def __init__(self, dim: int, eps: float, place: Place) -> None:
        self.eps = eps
        self.weight = nn.parameter((dim,), np.float32, place["device"])

    def forward(self, x: Tensor) -> Tensor:
        return nn.rms_norm_rope(x, self.weight, eps=self.eps, zero_centred=True)

    def heads(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None, heads: int) -> Tensor:
        """This norm over each head of x (B, L, heads * D), then the rotation by `rotary`, in
        one pass: attention's q/k path."""
        return nn.rms_norm_rope(x, self.weight, rotary, heads=heads, eps=self.eps,
                                zero_centred=True)

    def modulated(self, x: Tensor, mod: Tensor, shift_at: int, scale_at: int) -> Tensor:
        """(1 + scale) * norm(x) + shift in one pass, scale and shift read in place as the D
        columns of mod (B, 1, W) from scale_at and shift_at (nn.rms_norm_modulate; the two
        passes' bits). torch: `(1 + scale) * norm(x) + shift`."""
        return nn.rms_norm_modulate(x, self.weight, mod, mod, self.eps, zero_centred=True,
                                    shift_at=shift_at, scale_at=scale_at)


class Krea2Attention(nn.Module):
    """Self-attention with `kv_heads` key/value heads each serving heads / kv_heads query
    heads, per-head zero-centred RMS norms of q and k, rotary embeddings (interleaved pairs)
    where given, and sigmoid(to_gate(x)) multiplying the heads before to_out; no biases.
    diffusers: `Krea2Attention` with `Krea2AttnProcessor`."""

    def __init__(self, dim: int, heads: int, kv_heads: int, eps: float, place: Place) -> None:
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.to_q = nn.Linear(dim, dim, False, **place)
        self.to_k = nn.Linear(dim, self.head_dim * kv_heads, False, **place)
        self.to_v = nn.Linear(dim, self.head_dim * kv_heads, False, **place)
        self.to_gate = nn.Linear(dim, dim, False, **place)
        self.norm_q = Krea2RMSNorm(self.head_dim, eps, place)
        self.norm_k = Krea2RMSNorm(self.head_dim, eps, place)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, False, **place)])
        self._group_shape: dict[Device, Tensor] = {}

    def _repeat(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """k and v (B, L, KVH*D) -> (B, L, H*D), kv head h // group serving query head h, in
        one broadcasting pass for both. torch: `repeat_interleave(group, dim=2)` of the heads."""
        group = self.heads // self.kv_heads
        if group == 1:
            return k, v
        batch, length, _ = k.shape
        heads = (batch * length, self.kv_heads, 1, self.head_dim)
        like = self._group_shape.get(k.device)
        if like is None:  # a (1, 1, group, 1) tensor of the group's extent, made once
            like = self._group_shape[k.device] = empty((1, 1, group, 1), np.uint32,
                                                       device=k.device)
        repeated = typing.cast(tuple[Tensor, Tensor],
                               _broadcast(k.reshape(*heads), v.reshape(*heads), like))
        return (repeated[0].reshape(batch, length, -1), repeated[1].reshape(batch, length, -1))

    def gated_heads(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None) -> Tensor:
        """to_out's input: the attention's heads times sigmoid(to_gate(x)), x (B, L, dim)."""
        # q and the gate in one GEMM, k and v in another, where they can (nn.Linear.each)
        q, k, v, gate = nn.Linear.each(x, [self.to_q, self.to_k, self.to_v, self.to_gate])
        q = self.norm_q.heads(q, rotary, self.heads)
        k = self.norm_k.heads(k, rotary, self.kv_heads)
        out = nn.attention(q, *self._repeat(k, v), heads=self.heads)
        kernel = _gated_heads_f16 if out.dtype == np.float16 else _gated_heads
        return cast(typing.cast(Tensor, kernel(out, gate)), out.dtype)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None = None) -> Tensor:
        return typing.cast(nn.Linear, self.to_out[0])(self.gated_heads(x, rotary))


class Krea2SwiGLU(nn.Module):
    """down(silu(gate x) * up x); no biases. diffusers: `Krea2SwiGLU`."""

    def __init__(self, dim: int, hidden: int, place: Place) -> None:
        self.gate = nn.Linear(dim, hidden, False, **place)
        self.up = nn.Linear(dim, hidden, False, **place)
        self.down = nn.Linear(hidden, dim, False, **place)

    def hidden(self, x: Tensor) -> Tensor:
        """down's input: silu(gate x) * up x (the two projections in one GEMM where they can)."""
        return swiglu(*nn.Linear.each(x, [self.gate, self.up]))

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.hidden(x))


class Krea2TextFusionBlock(nn.Module):
    """Pre-norm attention (no rotary embedding) and SwiGLU over a float32 residual stream:
    the prompt's tapped hidden states keep an LLM's large features, which float16 would
    overflow; the projections and the attention run in the model's dtype from the normed
    stream. diffusers: `Krea2TextFusionBlock`."""

    def __init__(self, dim: int, heads: int, kv_heads: int, hidden: int, eps: float,
                 place: Place) -> None:
        self.dtype = np.dtype(place["dtype"])
        self.norm1 = Krea2RMSNorm(dim, eps, place)
        self.norm2 = Krea2RMSNorm(dim, eps, place)
        self.attn = Krea2Attention(dim, heads, kv_heads, eps, place)
        self.ff = Krea2SwiGLU(dim, hidden, place)

    def forward(self, x: Tensor) -> Tensor:
        """x: the float32 stream (B, L, dim) -> the stream after the block."""
        x = typing.cast(Tensor, _residual(x, self.attn(cast(self.norm1(x), self.dtype))))
        return typing.cast(Tensor, _residual(x, self.ff(cast(self.norm2(x), self.dtype))))


class Krea2TextProjection(nn.Module):
    """linear_2(gelu_tanh(linear_1(norm(x)))): the fused text into the transformer's width.
    diffusers: `Krea2TextProjection`."""

    def __init__(self, text_dim: int, dim: int, eps: float, place: Place) -> None:
        self.norm = Krea2RMSNorm(text_dim, eps, place)
        self.linear_1 = nn.Linear(text_dim, dim, **place)
        self.linear_2 = nn.Linear(dim, dim, **place)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, text_dim) in any float dtype (normed as it is) -> (B, L, dim)."""
        normed = cast(self.norm(x), self.linear_1.weight.dtype)
        return self.linear_2(self.linear_1.gelu(normed, approximate="tanh"))


class Krea2TransformerBlock(nn.Module):
    """Single-stream block over [text, image]: attention and SwiGLU, each reading
    (1 + scale) * norm(x) + shift and adding gate * its output, the six vectors the model's
    shared `time_mod_proj` output plus this block's `scale_shift_table` (prescale, preshift,
    pregate, postscale, postshift, postgate). diffusers: `Krea2TransformerBlock`."""

    def __init__(self, dim: int, heads: int, kv_heads: int, hidden: int, eps: float,
                 place: Place) -> None:
        self.scale_shift_table = nn.parameter((6, dim), **place)
        self.norm1 = Krea2RMSNorm(dim, eps, place)
        self.norm2 = Krea2RMSNorm(dim, eps, place)
        self.attn = Krea2Attention(dim, heads, kv_heads, eps, place)
        self.ff = Krea2SwiGLU(dim, hidden, place)

    def forward(self, x: Tensor, temb_mod: Tensor, rotary: tuple[Tensor, Tensor]) -> Tensor:
        """x (1, L, dim) in the model's dtype; temb_mod (1, 6 * dim): time_mod_proj's output."""
        # the norms read their scale and shift in place, and the fused GEMMs their gates (the
        # two passes copy a gate out)
        mods = Modulation(temb_mod + self.scale_shift_table.reshape(1, -1), 6)
        whole, d = mods.whole, mods.width
        attn, ff = self.attn, self.ff
        h = self.norm1.modulated(x, whole, shift_at=d, scale_at=0)
        # the gates and the residuals in to_out's and down's GEMMs where they can
        x = mods.gated_linear(2, x, typing.cast(nn.Linear, attn.to_out[0]),
                              attn.gated_heads(h, rotary))
        h = self.norm2.modulated(x, whole, shift_at=4 * d, scale_at=3 * d)
        return mods.gated_linear(5, x, ff.down, ff.hidden(h))


class Krea2FinalLayer(nn.Module):
    """linear((1 + scale) * norm(x) + shift), (scale, shift) = temb + scale_shift_table's rows.
    diffusers: `Krea2FinalLayer`."""

    def __init__(self, dim: int, out: int, eps: float, place: Place) -> None:
        self.scale_shift_table = nn.parameter((2, dim), **place)
        self.norm = Krea2RMSNorm(dim, eps, place)
        self.linear = nn.Linear(dim, out, **place)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        """x (1, L, dim), temb (1, dim) (the time embedding, not time_mod_proj's)."""
        rows = temb + self.scale_shift_table  # (2, dim): the scale's row, the shift's
        dim = rows.shape[1]
        return self.linear(self.norm.modulated(x, rows.reshape(1, 1, 2 * dim), shift_at=dim,
                                               scale_at=0))
