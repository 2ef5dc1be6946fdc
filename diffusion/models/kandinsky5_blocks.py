"""The Kandinsky 5 transformer's layers (diffusers' names, transformer_kandinsky.py): the
attention with per-head RMS norms of q and k, the exact-GELU feed-forward, the time-modulated
text (encoder) and visual (decoder) blocks and the output layer. The model
(models.kandinsky5) puts them together.

Every modulation is `out_layer(silu(time_embed))` split into (shift, scale, gate) triples
applied as norm(x) * (1 + scale) + shift and x + gate * out; the norms are parameterless
LayerNorms of eps 1e-5 (torch's default, not the 1e-6 of FLUX's)."""

from __future__ import annotations

import numpy as np

from gpustd import Tensor, nn

from .layers import Place
from .transformer_ops import Modulation, RMSNorm

__all__ = ["LAYER_NORM_EPS", "Kandinsky5Attention", "Kandinsky5FeedForward",
           "Kandinsky5Modulation", "Kandinsky5OutLayer", "Kandinsky5TransformerDecoderBlock",
           "Kandinsky5TransformerEncoderBlock"]

LAYER_NORM_EPS = 1e-5
# nn.RMSNorm(head_dim) without eps normalizes the float32 q and k: torch takes float32's eps
_QK_EPS = float(np.finfo(np.float32).eps)

Rotary = tuple[Tensor, Tensor]


class Kandinsky5Attention(nn.Module):
    """to_query/to_key/to_value/out_layer (with biases), RMS norms of each head of q and k
    (query_norm, key_norm), rotary positions (interleaved pairs) where given; self-attention,
    or cross-attention to `context` (keys and values from it, no rotation). diffusers:
    `Kandinsky5Attention` with `Kandinsky5AttnProcessor` (sparse_params None)."""

    def __init__(self, dim: int, head_dim: int, place: Place) -> None:
        self.heads = dim // head_dim
        self.to_query = nn.Linear(dim, dim, **place)
        self.to_key = nn.Linear(dim, dim, **place)
        self.to_value = nn.Linear(dim, dim, **place)
        self.query_norm = RMSNorm(head_dim, _QK_EPS, place=place)
        self.key_norm = RMSNorm(head_dim, _QK_EPS, place=place)
        self.out_layer = nn.Linear(dim, dim, **place)

    def heads_of(self, x: Tensor, context: Tensor | None = None,
                 rotary: Rotary | None = None) -> Tensor:
        """out_layer's input: the attention's heads (B, L, dim) of x (B, L, dim)."""
        if context is None:  # q, k and v in one GEMM where they can
            q, k, v = nn.Linear.each(x, [self.to_query, self.to_key, self.to_value])
        else:
            q, (k, v) = self.to_query(x), nn.Linear.each(context, [self.to_key, self.to_value])
        # each norm and its rotation in one pass (diffusers rounds the rotated q and k to
        # bfloat16 whatever the dtype: its checkpoints' precision; ours keeps the dtype's)
        q = nn.rms_norm_rope(q, self.query_norm.weight, rotary, heads=self.heads, eps=_QK_EPS)
        k = nn.rms_norm_rope(k, self.key_norm.weight, rotary, heads=self.heads, eps=_QK_EPS)
        return nn.attention(q, k, v, heads=self.heads)

    def forward(self, x: Tensor, context: Tensor | None = None,
                rotary: Rotary | None = None) -> Tensor:
        return self.out_layer(self.heads_of(x, context, rotary))


class Kandinsky5FeedForward(nn.Module):
    """out_layer(gelu(in_layer(x))), exact GELU, no biases. diffusers: `Kandinsky5FeedForward`."""

    def __init__(self, dim: int, hidden: int, place: Place) -> None:
        self.in_layer = nn.Linear(dim, hidden, False, **place)
        self.out_layer = nn.Linear(hidden, dim, False, **place)

    def hidden(self, x: Tensor) -> Tensor:
        """out_layer's input (the GELU in in_layer's GEMM epilogue where it can)."""
        return self.in_layer.gelu(x, approximate="none")

    def forward(self, x: Tensor) -> Tensor:
        return self.out_layer(self.hidden(x))


class Kandinsky5Modulation(nn.Module):
    """out_layer(silu(time_embed)) as `count` chunks of dim. diffusers: `Kandinsky5Modulation`
    (kept in float32 there; here in the model's dtype, as FLUX's adaLN linears, so the norms
    and the fused gated GEMMs read the chunks in place)."""

    def __init__(self, time_dim: int, dim: int, count: int, place: Place) -> None:
        self.count = count
        self.out_layer = nn.Linear(time_dim, count * dim, **place)

    def forward(self, activated: Tensor) -> Modulation:
        """activated: silu(time_embed) (1, time_dim), made once a step for every block."""
        return Modulation(self.out_layer(activated), self.count)


class Kandinsky5TransformerEncoderBlock(nn.Module):
    """A text block: modulated self-attention (the text's 1D rotary positions) and
    feed-forward, gated residuals; chunks (shift, scale, gate) x 2. The modulation reads the
    time embedding, so the text blocks run every step. diffusers:
    `Kandinsky5TransformerEncoderBlock`."""

    def __init__(self, dim: int, time_dim: int, ff_dim: int, head_dim: int,
                 place: Place) -> None:
        self.text_modulation = Kandinsky5Modulation(time_dim, dim, 6, place)
        self.self_attention = Kandinsky5Attention(dim, head_dim, place)
        self.feed_forward = Kandinsky5FeedForward(dim, ff_dim, place)

    def forward(self, x: Tensor, activated: Tensor, rotary: Rotary) -> Tensor:
        """x (1, L, dim) in the model's dtype."""
        mods = self.text_modulation(activated)
        attn, ff = self.self_attention, self.feed_forward
        # the gates (read in place) and the residuals in out_layer's GEMMs where they can;
        # the two passes elsewhere copy a gate out
        h = mods.norm(x, 0, 1, LAYER_NORM_EPS)
        x = mods.gated_linear(2, x, attn.out_layer, attn.heads_of(h, rotary=rotary))
        h = mods.norm(x, 3, 4, LAYER_NORM_EPS)
        return mods.gated_linear(5, x, ff.out_layer, ff.hidden(h))


class Kandinsky5TransformerDecoderBlock(nn.Module):
    """A visual block: modulated self-attention (3D rotary positions), modulated
    cross-attention to the text tokens, modulated feed-forward, each a gated residual;
    chunks (shift, scale, gate) x 3. diffusers: `Kandinsky5TransformerDecoderBlock`."""

    def __init__(self, dim: int, time_dim: int, ff_dim: int, head_dim: int,
                 place: Place) -> None:
        self.visual_modulation = Kandinsky5Modulation(time_dim, dim, 9, place)
        self.self_attention = Kandinsky5Attention(dim, head_dim, place)
        self.cross_attention = Kandinsky5Attention(dim, head_dim, place)
        self.feed_forward = Kandinsky5FeedForward(dim, ff_dim, place)

    def forward(self, x: Tensor, text: Tensor, activated: Tensor, rotary: Rotary) -> Tensor:
        """x (1, N, dim) the visual tokens, text (1, L, dim) the text blocks' output."""
        mods = self.visual_modulation(activated)
        attn, cross, ff = self.self_attention, self.cross_attention, self.feed_forward
        h = mods.norm(x, 0, 1, LAYER_NORM_EPS)
        x = mods.gated_linear(2, x, attn.out_layer, attn.heads_of(h, rotary=rotary))
        h = mods.norm(x, 3, 4, LAYER_NORM_EPS)
        x = mods.gated_linear(5, x, cross.out_layer, cross.heads_of(h, text))
        h = mods.norm(x, 6, 7, LAYER_NORM_EPS)
        return mods.gated_linear(8, x, ff.out_layer, ff.hidden(h))


class Kandinsky5OutLayer(nn.Module):
    """out_layer(norm(x) * (1 + scale) + shift), (shift, scale) = modulation (shift first),
    to each token's patch of out_visual_dim channels; the unpatching is the model's.
    diffusers: `Kandinsky5OutLayer` before its view/permute."""

    def __init__(self, dim: int, time_dim: int, out: int, place: Place) -> None:
        self.modulation = Kandinsky5Modulation(time_dim, dim, 2, place)
        self.out_layer = nn.Linear(dim, out, **place)

    def forward(self, x: Tensor, activated: Tensor) -> Tensor:
        """x (1, N, dim) -> (1, N, out), each row (channel, pt, ph, pw) flattened."""
        return self.out_layer(self.modulation(activated).norm(x, 0, 1, LAYER_NORM_EPS))
