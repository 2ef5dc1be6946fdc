"""The Wan transformer's blocks (diffusers' WanTransformerBlock with its attention and
feed-forward) and the token segments they modulate one by one (models.wan)."""

from __future__ import annotations

from typing import Any

from gpustd import Tensor, concatenate, nn, take_slice

from .dit_layers import GELU, Rope
from .layers import Place
from .transformer_ops import RMSNorm, gated_add, modulate, rope

__all__ = ["FeedForward", "Segment", "WanAttention", "WanTransformerBlock", "by_segment",
           "chunks", "joined"]

# A run of tokens [start, stop) and its time projection (B, 6, dim): one covers the whole
# sequence when each video has one timestep; Wan 2.2's image-to-video gives the first frame's
# tokens their own (timestep 0: the given picture).
Segment = tuple[int, int, Tensor]


def chunks(mods: Tensor, count: int) -> list[Tensor]:
    """(B, count, dim) -> `count` tensors (B, 1, dim)."""
    batch, _, dim = mods.shape
    return [take_slice(mods, i, i + 1, axis=1).reshape(batch, 1, dim) for i in range(count)]


def by_segment(x: Tensor, segments: list[Segment]) -> list[Tensor]:
    """x (B, L, D) cut along its tokens as `segments` are (x itself for one)."""
    if len(segments) == 1:
        return [x]
    return [take_slice(x, start, stop, axis=1) for start, stop, _ in segments]


def joined(parts: list[Tensor]) -> Tensor:
    """`by_segment`'s parts put back along the tokens (B, L, D)."""
    return parts[0] if len(parts) == 1 else concatenate(parts, axis=1)


class WanAttention(nn.Module):
    """to_q/to_k/to_v/to_out.0 with RMS norms of q and k across all heads (norm_q, norm_k);
    self-attention with rotary positions, or cross-attention to `context`; with `added_kv`
    (Wan 2.1 I2V's cross-attention) also to the image tokens through add_k_proj / add_v_proj
    (k RMS-normed by norm_added_k), the two attentions summed. diffusers: `WanAttention`."""

    def __init__(self, dim: int, heads: int, eps: float, place: Place,
                 added_kv: int | None = None) -> None:
        self.heads = heads
        if added_kv is not None:
            self.add_k_proj = nn.Linear(added_kv, dim, **place)
            self.add_v_proj = nn.Linear(added_kv, dim, **place)
            self.norm_added_k = RMSNorm(dim, eps, place=place)
        self.to_q = nn.Linear(dim, dim, **place)
        self.to_k = nn.Linear(dim, dim, **place)
        self.to_v = nn.Linear(dim, dim, **place)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, **place)])
        self.norm_q = RMSNorm(dim, eps, place=place)
        self.norm_k = RMSNorm(dim, eps, place=place)

    def forward(self, x: Tensor, context: Tensor | None = None, rotary: Rope = None,
                image: Tensor | None = None, causal: int | None = None) -> Tensor:
        """`causal` (self-attention only): the tokens of one causal block (SkyReels V2's
        diffusion forcing): each block's queries see the keys of that block and those
        before it. diffusers: the block-causal `attention_mask` of SkyReelsV2Attention."""
        if context is None:  # q, k and v of x in one GEMM where it can
            q, k, v = nn.Linear.each(x, [self.to_q, self.to_k, self.to_v])
        else:
            q, (k, v) = self.to_q(x), nn.Linear.each(context, [self.to_k, self.to_v])
        q, k = self.norm_q(q), self.norm_k(k)
        if rotary is not None:
            q = rope(q, *rotary, self.heads)
            k = rope(k, *rotary, self.heads)
        out = (nn.attention(q, k, v, heads=self.heads) if causal is None
               else _block_causal(q, k, v, self.heads, causal))
        if image is not None:
            out = out + nn.attention(q, self.norm_added_k(self.add_k_proj(image)),
                                     self.add_v_proj(image), heads=self.heads)
        return self.to_out[0](out)


def _block_causal(q: Tensor, k: Tensor, v: Tensor, heads: int, block: int) -> Tensor:
    """Attention of q's blocks of `block` tokens, each over the keys up to its own end: a
    prefix per block rather than an L x L mask, which would not fit a long video."""
    length = q.shape[1]
    return joined([nn.attention(take_slice(q, start, min(start + block, length), axis=1),
                                take_slice(k, 0, min(start + block, length), axis=1),
                                take_slice(v, 0, min(start + block, length), axis=1),
                                heads=heads) for start in range(0, length, block)])


class FeedForward(nn.Module):
    """net.0 (Linear + tanh GELU), net.2 (Linear). diffusers: `FeedForward(dim,
    inner_dim=ffn_dim, activation_fn="gelu-approximate")`."""

    def __init__(self, dim: int, inner: int, place: Place) -> None:
        self.net = nn.ModuleList([GELU(dim, inner, place), nn.Identity(),
                                  nn.Linear(inner, dim, **place)])

    def forward(self, x: Tensor) -> Tensor:
        return self.net[2](self.net[0](x))


class WanTransformerBlock(nn.Module):
    """Modulated self-attention, (normed) cross-attention to the text, modulated
    feed-forward; shift, scale, gate of each from `scale_shift_table` + the time
    projection. diffusers: `WanTransformerBlock`."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        self.eps = cfg["eps"]
        self.attn1 = WanAttention(dim, cfg["num_attention_heads"], cfg["eps"], place)
        self.attn2 = WanAttention(dim, cfg["num_attention_heads"], cfg["eps"], place,
                                  cfg["added_kv_proj_dim"])
        self.norm2 = (nn.LayerNorm(dim, cfg["eps"], **place) if cfg["cross_attn_norm"]
                      else None)
        self.ffn = FeedForward(dim, cfg["ffn_dim"], place)
        self.scale_shift_table = nn.parameter((1, 6, dim), **place)

    def forward(self, x: Tensor, context: Tensor, segments: list[Segment],
                rotary: Rope, image: Tensor | None = None, causal: int | None = None) -> Tensor:
        """x (B, L, dim), context (B, Lt, dim), image (B, Li, dim) or None; `segments` cover
        x's tokens in order; `causal`: the self-attention's causal block in tokens, or None
        (`WanAttention`)."""
        # 1. the six modulations of each segment: the block's table plus its time projection
        mods = [chunks(self.scale_shift_table + projection, 6) for _, _, projection in segments]
        # 2. modulated self-attention, gated residual
        normed = nn.layer_norm(x, None, None, eps=self.eps)
        attn = self.attn1(joined([modulate(part, m[0], m[1]) for part, m in
                                  zip(by_segment(normed, segments), mods)]), rotary=rotary,
                          causal=causal)
        x = joined([gated_add(part, m[2], out) for part, out, m in
                    zip(by_segment(x, segments), by_segment(attn, segments), mods)])
        # 3. cross-attention to the text, plain residual
        normed = self.norm2(x) if self.norm2 is not None else x
        x = x + self.attn2(normed, context, image=image)
        # 4. modulated feed-forward, gated residual
        normed = nn.layer_norm(x, None, None, eps=self.eps)
        ff = self.ffn(joined([modulate(part, m[3], m[4]) for part, m in
                              zip(by_segment(normed, segments), mods)]))
        return joined([gated_add(part, m[5], out) for part, out, m in
                       zip(by_segment(x, segments), by_segment(ff, segments), mods)])
