"""Motif-Video's blocks (models.motif_video): FLUX's double- and single-stream blocks (text
first in each joint sequence here; diffusers puts it last, which attention does not see: the
text's rotary tables turn nothing) with the shared text cross-attention, whose queries are the
video's attention output (turned by the video's rotary tables), whose keys are the block's
normed text tokens (not the SigLIP image tokens in front of them), its output added to the
video stream ungated. diffusers: `MotifVideoTransformerBlock`,
`MotifVideoSingleTransformerBlock`, `MotifVideoCrossAttention`."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

from gpustd import Tensor, concatenate, nn, take_slice

from .dit_layers import (
    AdaLayerNormZero,
    FeedForward,
    JointTransformerBlock,
    Rope,
    modulated_norm_of,
)
from .flux import FluxSingleTransformerBlock
from .layers import Place
from .transformer_ops import RMSNorm, gated_add, gated_linear, norm_rope

__all__ = ["CrossInputs", "MotifCrossAttention", "MotifSingleTransformerBlock",
           "MotifTransformerBlock", "checked_ratio"]


class CrossInputs(NamedTuple):
    """What the text cross-attention of a step reads beside its block's own inputs: the
    text's place in the context (`start`: the image tokens before it, `end`: the context's
    length), the video tokens' rotary tables and the text keys' mask (B, 1, 1, text) uint32
    (None: every key real)."""

    start: int
    end: int
    rotary: Rope
    mask: Tensor | None


class MotifCrossAttention(nn.Module):
    """Video queries x (B, N, dim) over text keys and values (B, T, dim): to_q / to_k /
    to_v with biases, RMS norms over each head of q and k, the video's rotary embedding on
    q alone, to_out.0. diffusers: `MotifVideoCrossAttention` (`MotifVideoCrossAttnProcessor2_0`)."""

    def __init__(self, dim: int, heads: int, head_dim: int, place: Place) -> None:
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, **place)
        self.to_k = nn.Linear(dim, inner, **place)
        self.to_v = nn.Linear(dim, inner, **place)
        self.norm_q = RMSNorm(head_dim, 1e-6, place=place)
        self.norm_k = RMSNorm(head_dim, 1e-6, place=place)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim, **place)])

    def forward(self, x: Tensor, text: Tensor, cross: CrossInputs) -> Tensor:
        q = norm_rope(self.norm_q, self.to_q(x), cross.rotary, self.heads)
        k = norm_rope(self.norm_k, self.to_k(text), None, self.heads)
        out = nn.attention(q, k, self.to_v(text), heads=self.heads, mask=cross.mask)
        return self.to_out[0](out)


def _text(context: Tensor, cross: CrossInputs) -> Tensor:
    """The text tokens of a (normed) context, the image tokens before them left out."""
    return take_slice(context, cross.start, cross.end, axis=1) if cross.start else context


class MotifTransformerBlock(JointTransformerBlock):
    """FLUX's double-stream block (its feed-forwards `mlp_ratio` wide) and, with `cross`,
    the text cross-attention after the joint attention."""

    def __init__(self, dim: int, heads: int, head_dim: int, place: Place, *,
                 mlp_ratio: int, cross: bool) -> None:
        # both streams' feed-forwards mlp_ratio wide (JointTransformerBlock builds them)
        self.feed_forward = functools.partial(FeedForward, mult=mlp_ratio)  # type: ignore
        super().__init__(dim, heads, head_dim, place, qk_norm=True)
        self.cross_attn = MotifCrossAttention(dim, heads, head_dim, place) if cross else None

    def forward(self, x: Tensor, context: Tensor, temb: Tensor,  # type: ignore[override]
                rotary: Rope = None, *, activated: Tensor | None = None,
                mask: Tensor | None = None, cross: CrossInputs | None = None
                ) -> tuple[Tensor, Tensor]:
        """(video (B, N, dim), context (B, T, dim)); `mask`: the joint keys kept (B, 1, 1,
        T + N), text first; `cross`: the cross-attention's inputs (blocks that have one)."""
        if self.cross_attn is None or cross is None:
            out, text = super().forward(x, context, temb, rotary, activated=activated,
                                        mask=mask)
            assert text is not None
            return out, text
        mods = self.norm1.modulation(temb, activated)
        assert isinstance(self.norm1_context, AdaLayerNormZero)
        context_mods = self.norm1_context.modulation(temb, activated)
        context_in = modulated_norm_of(context, context_mods, 0, 1, self.attn.text_inputs())
        video, text = self.attn(modulated_norm_of(x, mods, 0, 1, self.attn.image_inputs()),
                                context_in, rotary, mask)
        x = gated_add(x, mods[2], video)
        x = x + self.cross_attn(video, _text(context_in, cross), cross)
        assert text is not None
        context = gated_add(context, context_mods[2], text)
        x = self.ff.gated(x, mods[5], modulated_norm_of(x, mods, 3, 4, self.ff.input_layers()))
        return x, self.ff_context.gated(context, context_mods[5], modulated_norm_of(
            context, context_mods, 3, 4, self.ff_context.input_layers()))


class MotifSingleTransformerBlock(FluxSingleTransformerBlock):
    """FLUX's single-stream block over text then video tokens and, with `cross`, the text
    cross-attention added to the video's attention output before proj_out."""

    def __init__(self, dim: int, heads: int, head_dim: int, place: Place, *,
                 mlp_ratio: float, cross: bool) -> None:
        super().__init__(dim, heads, head_dim, place, mlp_ratio)
        self.cross_attn = MotifCrossAttention(dim, heads, head_dim, place) if cross else None

    def forward(self, x: Tensor, temb: Tensor, rotary: Rope, *,  # type: ignore[override]
                activated: Tensor | None = None, mask: Tensor | None = None,
                cross: CrossInputs | None = None) -> Tensor:
        """x: the context's then the video's tokens (B, T + N, dim); `mask` the keys kept;
        `cross`: the cross-attention's inputs (blocks that have one)."""
        if self.cross_attn is None or cross is None:
            return super().forward(x, temb, rotary, activated=activated, mask=mask)
        mods = self.norm.modulation(temb, activated)  # shift, scale, gate
        normed = modulated_norm_of(x, mods, 0, 1, self.input_layers())
        q, k, v, (mlp,) = self.attn.projections(normed, also=(self.proj_mlp,), rotary=rotary)
        attended = self.attn.attend(q, k, v, None, mask)[0]
        length = x.shape[1]
        video = take_slice(attended, cross.end, length, axis=1)
        video = video + self.cross_attn(video, _text(take_slice(normed, 0, cross.end, axis=1),
                                                     cross), cross)
        attended = concatenate([take_slice(attended, 0, cross.end, axis=1), video], axis=1)
        joint = concatenate([attended, nn.gelu(mlp, approximate="tanh")], axis=2)
        if not self.proj_out.plain():  # --int8: two passes
            return gated_add(x, mods[2], self.proj_out(joint))
        return gated_linear(x, mods[2], self.proj_out, joint)


def checked_ratio(value: Any) -> int:
    """mlp_ratio as the double-stream feed-forwards' integer multiple; ValueError else."""
    if float(value) != int(value) or int(value) < 1:
        raise ValueError(f"mlp_ratio {value} is not supported; this transformer implements "
                         "whole ratios (Motif-Video's is 4.0)")
    return int(value)
