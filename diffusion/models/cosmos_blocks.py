"""The NVIDIA Cosmos (Predict2 / Predict2.5) transformer's pieces, diffusers' names: the
time embedding, the adaLN-LoRA modulations, the attention with per-head RMS-normed q and k,
the exact-GELU feed-forward and the block (models.cosmos)."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, nn, take_slice

from .dit_layers import Rope
from .layers import Place
from .transformer_ops import RMSNorm, chunks, gated_add, head_norm, norm_modulate, norm_rope
from .wan_blocks import Segment, by_segment, joined

__all__ = ["AdaLayerNorm", "CosmosAttention", "CosmosBlock", "CosmosTimeEmbedding",
           "FeedForward", "Mods"]

# one segment's modulation input: (silu(embedded timestep), temb) both (B, ...)
Mods = tuple[Tensor, Tensor]


class AdaLayerNorm(nn.Module):
    """silu(embedded timestep) -> linear_1 (to the LoRA width) -> linear_2 (`count` x dim),
    plus the first `count` x dim features of temb: `count` modulations (B, 1, dim) (shift,
    scale[, gate]). diffusers: `CosmosAdaLayerNormZero` (count 3) / `CosmosAdaLayerNorm`
    (count 2), without their norm (the block applies it with the shift and scale)."""

    def __init__(self, dim: int, lora: int, count: int, place: Place) -> None:
        self.count = count
        self.linear_1 = nn.Linear(dim, lora, False, **place)
        self.linear_2 = nn.Linear(lora, count * dim, False, **place)

    def forward(self, activated: Tensor, temb: Tensor) -> list[Tensor]:
        width = self.linear_2.weight.shape[0]
        if temb.shape[1] != width:
            temb = take_slice(temb, 0, width, axis=1)
        return chunks(self.linear_2(self.linear_1(activated)) + temb, self.count)


class CosmosTimeEmbedding(nn.Module):
    """timestep (B,) -> (temb (B, 3 dim): t_embedder's linear_1, SiLU, linear_2 of its
    sinusoid; the embedded timestep (B, dim): the sinusoid RMS-normed by `norm`). diffusers:
    `CosmosEmbedding` (Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0))."""

    def __init__(self, dim: int, place: Place) -> None:
        self.dim, self.dtype = dim, place["dtype"]
        self.t_embedder = _TimestepEmbedding(dim, place)
        self.norm = RMSNorm(dim, 1e-6, place=place)

    def forward(self, timestep: Any, device: Device) -> tuple[Tensor, Tensor]:
        """timestep (B,) host numbers or a float32 Tensor (a replayed step's)."""
        t = timestep.reshape(-1) if isinstance(timestep, Tensor) else np.asarray(
            timestep, np.float32).reshape(-1)
        features = nn.timestep_embedding(t, self.dim, flip_sin_to_cos=True,
                                         downscale_freq_shift=0, dtype=self.dtype,
                                         device=device)
        return self.t_embedder(features), self.norm(features)


class _TimestepEmbedding(nn.Module):
    """linear_1, SiLU, linear_2 (to 3 x dim), no biases. diffusers: `CosmosTimestepEmbedding`."""

    def __init__(self, dim: int, place: Place) -> None:
        self.linear_1 = nn.Linear(dim, dim, False, **place)
        self.linear_2 = nn.Linear(dim, 3 * dim, False, **place)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(nn.silu(self.linear_1(x)))


class CosmosAttention(nn.Module):
    """to_q/to_k/to_v/to_out.0 without biases, q and k RMS-normed per head (norm_q, norm_k);
    self-attention with rotary positions (the halves layout), or cross-attention to the
    text. diffusers: `Attention(qk_norm="rms_norm")` with `CosmosAttnProcessor2_0`."""

    def __init__(self, dim: int, heads: int, context_dim: int, place: Place) -> None:
        self.heads, head_dim = heads, dim // heads
        self.to_q = nn.Linear(dim, dim, False, **place)
        self.to_k = nn.Linear(context_dim, dim, False, **place)
        self.to_v = nn.Linear(context_dim, dim, False, **place)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, False, **place)])
        self.norm_q = RMSNorm(head_dim, 1e-6, place=place)
        self.norm_k = RMSNorm(head_dim, 1e-6, place=place)

    def forward(self, x: Tensor, context: Tensor | None = None, rotary: Rope = None) -> Tensor:
        head_dim = self.to_q.weight.shape[0] // self.heads
        if context is None:  # q, k and v of x in one GEMM where it can
            q, k, v = nn.Linear.each(x, [self.to_q, self.to_k, self.to_v])
            q = norm_rope(self.norm_q, q, rotary, self.heads, halves=True)
            k = norm_rope(self.norm_k, k, rotary, self.heads, halves=True)
        else:
            q, (k, v) = self.to_q(x), nn.Linear.each(context, [self.to_k, self.to_v])
            q = head_norm(self.norm_q, q, self.heads, head_dim)
            k = head_norm(self.norm_k, k, self.heads, head_dim)
        return self.to_out[0](nn.attention(q, k, v, heads=self.heads))


class _ExactGELU(nn.Module):
    def __init__(self, dim: int, inner: int, place: Place) -> None:
        self.proj = nn.Linear(dim, inner, False, **place)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj.gelu(x)  # exact GELU, in the GEMM's epilogue where it can


class FeedForward(nn.Module):
    """net.0.proj (Linear, exact GELU), net.2 (Linear), no biases. diffusers:
    `FeedForward(dim, mult=mlp_ratio, activation_fn="gelu", bias=False)`."""

    def __init__(self, dim: int, inner: int, place: Place) -> None:
        self.net = nn.ModuleList([_ExactGELU(dim, inner, place), nn.Identity(),
                                  nn.Linear(inner, dim, False, **place)])

    def forward(self, x: Tensor) -> Tensor:
        return self.net[2](self.net[0](x))


class CosmosBlock(nn.Module):
    """Self-attention (rotary), cross-attention to the text and the feed-forward, each
    on the parameterless LayerNorm modulated by its adaLN-LoRA (norm1..3: shift, scale,
    gate) and added back gated. diffusers: `CosmosTransformerBlock`."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        heads = cfg["num_attention_heads"]
        dim = heads * cfg["attention_head_dim"]
        lora = cfg["adaln_lora_dim"]
        self.norm1 = AdaLayerNorm(dim, lora, 3, place)
        self.attn1 = CosmosAttention(dim, heads, dim, place)
        self.norm2 = AdaLayerNorm(dim, lora, 3, place)
        self.attn2 = CosmosAttention(dim, heads, cfg["text_embed_dim"], place)
        self.norm3 = AdaLayerNorm(dim, lora, 3, place)
        self.ff = FeedForward(dim, int(dim * cfg["mlp_ratio"]), place)

    def forward(self, x: Tensor, context: Tensor, segments: list[Segment], mods: list[Mods],
                rotary: Rope) -> Tensor:
        """x (B, L, dim), context (B, Lt, text_embed_dim); `segments` cover x's tokens in
        order, `mods` each one's modulation input."""
        for norm, layer in ((self.norm1, "self"), (self.norm2, "cross"), (self.norm3, "ff")):
            each = [norm(*mod) for mod in mods]
            normed = joined([norm_modulate(part, m[0], m[1]) for part, m in
                             zip(by_segment(x, segments), each)])
            if layer == "self":
                out = self.attn1(normed, rotary=rotary)
            elif layer == "cross":
                out = self.attn2(normed, context)
            else:
                out = self.ff(normed)
            x = joined([gated_add(part, m[2], y) for part, y, m in
                        zip(by_segment(x, segments), by_segment(out, segments), each)])
        return x
