"""The Qwen-Image 2.1 transformer's layers (diffusers' names, transformer_qwenimage21.py): the
text projection, the SwiGLU feed-forward, the scale-only adaptive norms and the single-stream
block, whose attention runs in two halves: the prefix's own (the prompt's text and condition
pictures, block-causal, once per prompt) and the target picture's over the prefix's kept keys
and values plus its own (every step)."""

from __future__ import annotations

import typing
from collections.abc import Sequence

import numpy as np

from gpustd import Tensor, concatenate, empty, nn
from gpustd.shape import put_slice, take_slice

from .dit_layers import JointAttention
from .flux2 import swiglu
from .layers import Place
from .qwen_image21_layout import PrefixSegment
from .transformer_ops import Modulation, RMSNorm, cast, norm_rope, rms_norm
from .z_image_blocks import _gated

__all__ = ["QwenImage21TextProjection", "QwenImage21TransformerBlock", "ScaleGates",
           "scale_norm"]


def scale_norm(x: Tensor, zeros: Tensor, emb: Tensor, at: int, eps: float) -> Tensor:
    """layer_norm(x) * (1 + emb[..., at:at + D]) in one pass: the 2.1 norms' modulation has
    no shift, `zeros` (emb's shape (B, 1, W)) stands for it. torch: `F.layer_norm(x, (D,),
    eps=eps) * (1 + scale)`."""
    return nn.layer_norm_modulate(x, zeros, emb, eps=eps, shift_at=0, scale_at=at)


class ScaleGates:
    """The shared `modulation`'s output for one set of tokens, (B, 4 * D) = [scale1, gate1,
    scale2, gate2]: `norm(x, i)` is scale_norm by scale i (0, 1), `gate(i)` the tanh-gated
    residual add of gate i. diffusers: `QwenImage21TransformerBlock._modulate` (the text's
    row from t = 0, the image's from its timestep: `causal_condition`)."""

    def __init__(self, emb: Tensor, zeros: Tensor, eps: float) -> None:
        self.mods, self.zeros, self.eps = Modulation(emb, 4), zeros, eps

    def norm(self, x: Tensor, index: int) -> Tensor:
        mods = self.mods
        return scale_norm(x, self.zeros, mods.whole, 2 * index * mods.width, self.eps)

    def gate(self, index: int, residual: Tensor, y: Tensor) -> Tensor:
        """residual + tanh(gate index) * y (a float16 stream clipped to +-65504, as
        diffusers clips its block outputs); the gate copied once for all the blocks."""
        return _gated(residual, self.mods[2 * index + 1], y)


def _segmented_attention(q: Tensor, k: Tensor, v: Tensor, segments: Sequence[PrefixSegment],
                         heads: int) -> Tensor:
    """Attention of (B, L, heads * head_dim) tensors, each segment's queries over the keys
    before its end as the segment says; one call when a single segment spans all. torch:
    `QwenImage21AttnProcessor`'s prefill loop of `F.scaled_dot_product_attention`."""
    if len(segments) == 1:
        return nn.attention(q, k, v, mask=segments[0].mask, causal=segments[0].causal,
                            heads=heads)
    length, outs = k.shape[1], []
    for start, end, mask, causal in segments:
        keys, values = (k, v) if end == length else (take_slice(k, 0, end, axis=1),
                                                      take_slice(v, 0, end, axis=1))
        outs.append(nn.attention(take_slice(q, start, end, axis=1), keys, values, mask=mask,
                                 causal=causal, heads=heads))
    return concatenate(outs, axis=1)


class QwenImage21TextProjection(nn.Module):
    """A zero-centred RMS norm (scale = weight + 1, in float32), in_layer, tanh GELU,
    out_layer; no biases. diffusers: `QwenImage21TextProjection`."""

    def __init__(self, in_dim: int, dim: int, eps: float, place: Place) -> None:
        # float32 whatever the model's dtype: the checkpoint stores scale - 1, which float16
        # would round before the + 1
        self.text_norm = RMSNorm(in_dim, eps, place={**place, "dtype": np.float32})
        self.in_layer = nn.Linear(in_dim, dim, False, **place)
        self.out_layer = nn.Linear(dim, dim, False, **place)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, Lt, in_dim) in any float dtype (normed as it is) -> (B, Lt, dim)."""
        norm = self.text_norm
        normed = rms_norm(x, typing.cast(Tensor, norm.weight) + 1.0, norm.eps)
        dtype = self.in_layer.weight.dtype
        return self.out_layer(self.in_layer.gelu(cast(normed, dtype), approximate="tanh"))


class QwenImage21FeedForward(nn.Module):
    """out(silu(gate_layer x) * proj x); no biases. diffusers: `QwenImage21SwiGLUFeedForward`."""

    def __init__(self, dim: int, hidden: int, place: Place) -> None:
        self.proj = nn.Linear(dim, hidden, False, **place)
        self.out = nn.Linear(hidden, dim, False, **place)
        self.gate_layer = nn.Linear(dim, hidden, False, **place)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = nn.Linear.each(x, [self.gate_layer, self.proj])  # --int8: x quantized once
        return self.out(swiglu(gate, up))


class QwenImage21TransformerBlock(nn.Module):
    """Single-stream block: attention (q/k RMS norms, interleaved-pair rope, no biases) and
    the SwiGLU feed-forward, each reading a scale-only adaLN of its input and adding a
    tanh-gated residual; the modulation comes from the model's shared `modulation`.
    diffusers: `QwenImage21TransformerBlock` (`img_norm1`/`img_norm2` have no parameters).

    Its attention is block-causal over [prefix, target]: a text token sees the tokens up to
    itself, a picture's token those before its picture and all of its picture, so the target
    picture's see everything. So `prefix` runs the prefix alone and returns its keys and
    values, and `image` the target's tokens against them (diffusers' kv_cache "extract" and
    "cached" modes)."""

    def __init__(self, dim: int, heads: int, head_dim: int, hidden: int, eps: float,
                 place: Place) -> None:
        self.attn = JointAttention(dim, heads, head_dim, place, qk_norm=True, context=False,
                                   eps=eps, bias=False)
        self.img_mlp = QwenImage21FeedForward(dim, hidden, place)

    def _attention(self) -> tuple[JointAttention, RMSNorm | None, RMSNorm | None]:
        """The attention and its q and k norms (JointAttention sets them by name)."""
        attn = self.attn
        return attn, getattr(attn, "norm_q", None), getattr(attn, "norm_k", None)

    def _feed_forward(self, x: Tensor, mods: ScaleGates) -> Tensor:
        return mods.gate(1, x, self.img_mlp(mods.norm(x, 1)))

    def prefix(self, x: Tensor, mods: ScaleGates, rotary: tuple[Tensor, Tensor],
               segments: Sequence[PrefixSegment], *, last: bool = False
               ) -> tuple[Tensor | None, Tensor, Tensor]:
        """The prefix's tokens x (B, Lp, dim) (the prompt's text, condition pictures' latents
        among it) -> (x after the block, their keys, their values) (keys normed and rotated,
        (B, Lp, heads * head_dim)). Attention block-causal, one call per segment
        (`qwen_image21_layout.prefix_segments`). `last`: only the keys and values (no later
        block reads the prefix's output)."""
        attn, norm_q, norm_k = self._attention()
        h = mods.norm(x, 0)
        if last:
            k, v = nn.Linear.each(h, [attn.to_k, attn.to_v])
            return None, norm_rope(norm_k, k, rotary, attn.heads), v
        q, k, v = nn.Linear.each(h, attn.image_inputs())
        q = norm_rope(norm_q, q, rotary, attn.heads)
        k = norm_rope(norm_k, k, rotary, attn.heads)
        out = _segmented_attention(q, k, v, segments, attn.heads)
        x = mods.gate(0, x, typing.cast(nn.ModuleList, attn.to_out)[0](out))
        return self._feed_forward(x, mods), k, v

    def image(self, x: Tensor, mods: ScaleGates, rotary: tuple[Tensor, Tensor],
              joint_rotary: tuple[Tensor, Tensor], text_k: Tensor, text_v: Tensor,
              mask: Tensor | None) -> Tensor:
        """The image tokens x (B, Li, dim) attending to [text_k, their own keys] (`rotary`:
        their tables; `joint_rotary`: the text's and theirs, for the keys written after
        text_k) -> x after the block. `mask` (B, 1, 1, Lt + Li) nonzero for the keys kept."""
        attn, norm_q, norm_k = self._attention()
        q, k, v = nn.Linear.each(mods.norm(x, 0), attn.image_inputs())
        q = norm_rope(norm_q, q, rotary, attn.heads)
        batch, text_length, width = text_k.shape
        keys = empty((batch, text_length + x.shape[1], width), q.dtype, device=q.device)
        put_slice(keys, text_k, 0, axis=1)
        norm_rope(norm_k, k, joint_rotary, attn.heads, out=keys, start=text_length)
        values = concatenate([text_v, v], axis=1)
        out = nn.attention(q, keys, values, mask=mask, heads=attn.heads)
        x = mods.gate(0, x, typing.cast(nn.ModuleList, attn.to_out)[0](out))
        return self._feed_forward(x, mods)
