"""LTX-2's audio-video transformer block (diffusers' `LTX2VideoTransformerBlock` and
`LTX2Attention`, transformer_ltx2.py): each of the video and audio streams runs modulated
self-attention, cross-attention to its own text, then the two streams attend to each other
(audio-to-video: video queries audio; video-to-audio: audio queries video, both with
rotations of time alone), then a modulated feed-forward. The model (models.ltx2) puts the
blocks together.

Every modulation is a per-block table plus a time projection, applied to an RMS norm (without
a weight unless the config's norm_elementwise_affine) as norm(x) * (1 + scale) + shift and
gated into the residual as x + gate * out. A stream's time projection may differ along its
tokens (image-to-video gives the given frame's tokens timestep 0): each run of tokens sharing
one (a `Segment`, as models.wan_blocks') is modulated by its own.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Any

from gpustd import Tensor, elementwise_kernel, nn

from .dit_layers import FeedForward
from .layers import Place
from .ltx2_rope import Rotary, norm_rope
from .transformer_ops import Modulation, RMSNorm, gated_add, modulate
from .wan_blocks import Segment, by_segment, chunks, joined

__all__ = ["LTX2Attention", "LTX2VideoTransformerBlock", "Stream", "modulations"]

_EPS = 1e-6


@elementwise_kernel
def _head_gate(h, logits):  # 2 * sigmoid: zero-initialized logits leave the heads as they are
    return h * (2.0 / (1.0 + math.exp(-logits)))


@dataclass
class Stream:
    """What one stream's blocks read in one call: `times` its segments with the time
    projection (B, k * dim) of each, `cross` the same for the audio-video cross-attention's
    (B, 5 * dim: its scale/shift projection then its gate's), `rotary` its self-attention's
    tables and `cross_rotary` its tables for the other stream's attention (time alone),
    `context` its projected text (B, Lt, dim) and `mask` the text's additive key mask
    (B, 1, 1, Lt) or None, `prompt` the prompt modulation's projection (B, 2 * dim) (LTX-2.3)
    or None, `self_mask` an additive (B, 1, L, L) self-attention mask or None."""

    times: list[Segment]
    cross: list[Segment]
    rotary: Rotary
    cross_rotary: Rotary
    context: Tensor
    mask: Tensor | None = None
    prompt: Tensor | None = None
    self_mask: Tensor | None = None


def modulations(table: Tensor, segments: list[Segment]) -> list[Modulation]:
    """Each segment's modulation: table (k, dim) + its projection (B, k * dim), its chunks
    read in place by the norms (one add, no copies but the gates'). torch: `(table[None,
    None] + temb.reshape(B, 1, k, dim)).unbind(2)`."""
    count, dim = table.shape
    return [Modulation(table.reshape(1, count * dim) + projection, count)
            for _, _, projection in segments]


def modulated(x: Tensor, norm: RMSNorm, mods: list[Modulation], segments: list[Segment],
              shift: int, scale: int) -> Tensor:
    """norm(x) * (1 + scale) + shift with each segment's own chunks, one pass a segment
    (nn.rms_norm_modulate)."""
    return joined([nn.rms_norm_modulate(part, norm.weight, m.whole, m.whole, norm.eps,
                                        shift_at=shift * m.width, scale_at=scale * m.width)
                   for part, m in zip(by_segment(x, segments), mods)])


def gated(residual: Tensor, y: Tensor, mods: list[Modulation], segments: list[Segment],
          gate: int) -> Tensor:
    """residual + gate * y with each segment's own gate."""
    return joined([gated_add(r, m[gate], part) for r, part, m in
                   zip(by_segment(residual, segments), by_segment(y, segments), mods)])


class LTX2Attention(nn.Module):
    """to_q/to_k/to_v/to_out.0 with RMS norms of q and k across all heads (norm_q, norm_k),
    rotations of q and k by their own tables where given, and with `gated` a per-head gate
    2 * sigmoid(to_gate_logits(x)) on the heads (LTX-2.3). diffusers: `LTX2Attention` with
    `LTX2AudioVideoAttnProcessor`; `perturbed=True` is `LTX2PerturbedAttnProcessor` with
    every batch element perturbed (STG): the values stand in for the attention."""

    def __init__(self, dim: int, heads: int, head_dim: int, place: Place, *,
                 context_dim: int | None = None, bias: bool = True, out_bias: bool = True,
                 gated: bool = False) -> None:
        inner, source = heads * head_dim, context_dim or dim
        self.heads = heads
        self.norm_q = RMSNorm(inner, _EPS, place=place)
        self.norm_k = RMSNorm(inner, _EPS, place=place)
        self.to_q = nn.Linear(dim, inner, bias, **place)
        self.to_k = nn.Linear(source, inner, bias, **place)
        self.to_v = nn.Linear(source, inner, bias, **place)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim, out_bias, **place)])
        self.to_gate_logits = nn.Linear(dim, heads, **place) if gated else None

    def forward(self, x: Tensor, context: Tensor | None = None, *, mask: Tensor | None = None,
                q_rotary: Rotary | None = None, k_rotary: Rotary | None = None,
                perturbed: bool = False) -> Tensor:
        """x (B, L, dim), context (B, Lc, context_dim) or None (self-attention); `k_rotary`
        defaults to `q_rotary`; mask additive (B, 1, 1 or L, Lc)."""
        source = x if context is None else context
        if perturbed:
            heads = self.to_v(source)
        else:
            if context is None:  # q, k and v in one GEMM where they can
                q, k, v = nn.Linear.each(x, [self.to_q, self.to_k, self.to_v])
            else:
                q, (k, v) = self.to_q(x), nn.Linear.each(context, [self.to_k, self.to_v])
            q = norm_rope(self.norm_q, q, q_rotary)
            k = norm_rope(self.norm_k, k, k_rotary if k_rotary is not None else q_rotary)
            heads = nn.attention(q, k, v, heads=self.heads, mask=mask)
        if self.to_gate_logits is not None:
            batch, length, width = heads.shape
            logits = self.to_gate_logits(x).reshape(batch, length, self.heads, 1)
            heads = typing.cast(Tensor, _head_gate(
                heads.reshape(batch, length, self.heads, width // self.heads), logits)
            ).reshape(batch, length, width)
        return self.to_out[0](heads)


class LTX2VideoTransformerBlock(nn.Module):
    """One block of both streams (diffusers' names: attn1/audio_attn1, attn2/audio_attn2,
    audio_to_video_attn, video_to_audio_attn, ff/audio_ff, the norms and the modulation
    tables). `cfg`: the model's config."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        audio = cfg["audio_num_attention_heads"] * cfg["audio_attention_head_dim"]
        heads = (cfg["num_attention_heads"], cfg["attention_head_dim"])
        audio_heads = (cfg["audio_num_attention_heads"], cfg["audio_attention_head_dim"])
        self.video_adaln, self.audio_adaln = cfg["cross_attn_mod"], cfg["audio_cross_attn_mod"]
        biases = {"bias": cfg["attention_bias"], "out_bias": cfg["attention_out_bias"]}
        video = {**biases, "gated": cfg["gated_attn"]}
        sound = {**biases, "gated": cfg["audio_gated_attn"]}
        affine = cfg["norm_elementwise_affine"]

        def norm(width: int) -> RMSNorm:
            return RMSNorm(width, cfg["norm_eps"], place=place, elementwise_affine=affine)

        self.norm1, self.audio_norm1 = norm(dim), norm(audio)
        self.attn1 = LTX2Attention(dim, *heads, place, **video)
        self.audio_attn1 = LTX2Attention(audio, *audio_heads, place, **sound)
        self.norm2, self.audio_norm2 = norm(dim), norm(audio)
        self.attn2 = LTX2Attention(dim, *heads, place, context_dim=cfg["cross_attention_dim"],
                                   **video)
        self.audio_attn2 = LTX2Attention(audio, *audio_heads, place,
                                         context_dim=cfg["audio_cross_attention_dim"], **sound)
        self.audio_to_video_norm, self.video_to_audio_norm = norm(dim), norm(audio)
        self.audio_to_video_attn = LTX2Attention(dim, *audio_heads, place, context_dim=audio,
                                                 **video)
        self.video_to_audio_attn = LTX2Attention(audio, *audio_heads, place, context_dim=dim,
                                                 **sound)
        self.norm3, self.audio_norm3 = norm(dim), norm(audio)
        self.ff = FeedForward(dim, place, bias=cfg["ff_bias"])
        self.audio_ff = FeedForward(audio, place, bias=cfg["audio_ff_bias"])
        self.scale_shift_table = nn.parameter((9 if self.video_adaln else 6, dim), **place)
        self.audio_scale_shift_table = nn.parameter((9 if self.audio_adaln else 6, audio),
                                                    **place)
        if self.video_adaln or self.audio_adaln:
            self.prompt_scale_shift_table = nn.parameter((2, dim), **place)
            self.audio_prompt_scale_shift_table = nn.parameter((2, audio), **place)
        self.video_a2v_cross_attn_scale_shift_table = nn.parameter((5, dim), **place)
        self.audio_a2v_cross_attn_scale_shift_table = nn.parameter((5, audio), **place)

    def _self(self, x: Tensor, stream: Stream, mods: list[Modulation], norm: RMSNorm,
              attn: LTX2Attention, perturbed: bool) -> Tensor:
        """1. modulated self-attention, gated residual."""
        normed = modulated(x, norm, mods, stream.times, 0, 1)
        out = attn(normed, mask=stream.self_mask, q_rotary=stream.rotary, perturbed=perturbed)
        return gated(x, out, mods, stream.times, 2)

    def _text(self, x: Tensor, stream: Stream, mods: list[Modulation], norm: RMSNorm,
              attn: LTX2Attention, table: Tensor | None, adaln: bool) -> Tensor:
        """2. cross-attention to the text: the query modulated and the output gated where
        `adaln` (LTX-2.3), the text modulated by the prompt table where the model has it."""
        normed = modulated(x, norm, mods, stream.times, 6, 7) if adaln else norm(x)
        context = stream.context
        if table is not None:
            both = table.reshape(1, 2, -1) if stream.prompt is None else \
                table.reshape(1, 2, -1) + stream.prompt.reshape(-1, 2, table.shape[1])
            shift, scale = chunks(both, 2)
            context = modulate(context, shift, scale)
        out = attn(normed, context, mask=stream.mask)
        return gated(x, out, mods, stream.times, 8) if adaln else x + out

    def forward(self, x: Tensor, audio: Tensor, video_stream: Stream, audio_stream: Stream,
                *, cross_modal: bool = True, perturbed: bool = False) -> tuple[Tensor, Tensor]:
        """x (B, Lv, dim) and audio (B, La, audio_dim) -> both after the block;
        `cross_modal=False`: the streams do not attend to each other (diffusers'
        isolate_modalities); `perturbed`: STG's self-attentions (values alone)."""
        video_mods = modulations(self.scale_shift_table, video_stream.times)
        audio_mods = modulations(self.audio_scale_shift_table, audio_stream.times)
        # 1. self-attention of each stream
        x = self._self(x, video_stream, video_mods, self.norm1, self.attn1, perturbed)
        audio = self._self(audio, audio_stream, audio_mods, self.audio_norm1,
                           self.audio_attn1, perturbed)
        # 2. each stream's cross-attention to its text
        prompt = self.video_adaln or self.audio_adaln
        x = self._text(x, video_stream, video_mods, self.norm2, self.attn2,
                       self.prompt_scale_shift_table if prompt else None, self.video_adaln)
        audio = self._text(audio, audio_stream, audio_mods, self.audio_norm2,
                           self.audio_attn2, self.audio_prompt_scale_shift_table if prompt
                           else None, self.audio_adaln)
        # 3. the streams attend to each other, both from the norms before either changes
        if cross_modal:
            x, audio = self._cross(x, audio, video_stream, audio_stream)
        # 4. modulated feed-forward of each, gated residual
        x = gated(x, self.ff(modulated(x, self.norm3, video_mods, video_stream.times, 3, 4)),
                  video_mods, video_stream.times, 5)
        audio = gated(audio, self.audio_ff(modulated(audio, self.audio_norm3, audio_mods,
                                                     audio_stream.times, 3, 4)),
                      audio_mods, audio_stream.times, 5)
        return x, audio

    def _cross(self, x: Tensor, audio: Tensor, video_stream: Stream, audio_stream: Stream
               ) -> tuple[Tensor, Tensor]:
        """3. audio-to-video (q video, k/v audio) and video-to-audio attention; each side's
        (scale, shift) pairs (a2v, v2a) and gate from its table + its cross projection."""
        norm, audio_norm = self.audio_to_video_norm, self.video_to_audio_norm
        video_mods = modulations(self.video_a2v_cross_attn_scale_shift_table,
                                 video_stream.cross)
        audio_mods = modulations(self.audio_a2v_cross_attn_scale_shift_table,
                                 audio_stream.cross)
        vs, aus = video_stream.cross, audio_stream.cross
        a2v = self.audio_to_video_attn(
            modulated(x, norm, video_mods, vs, 1, 0),
            modulated(audio, audio_norm, audio_mods, aus, 1, 0),
            q_rotary=video_stream.cross_rotary, k_rotary=audio_stream.cross_rotary)
        v2a = self.video_to_audio_attn(
            modulated(audio, audio_norm, audio_mods, aus, 3, 2),
            modulated(x, norm, video_mods, vs, 3, 2),
            q_rotary=audio_stream.cross_rotary, k_rotary=video_stream.cross_rotary)
        return gated(x, a2v, video_mods, vs, 4), gated(audio, v2a, audio_mods, aus, 4)
