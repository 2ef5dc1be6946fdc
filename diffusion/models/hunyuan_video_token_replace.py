"""HunyuanVideo-I2V's `image_condition_type="token_replace"` blocks (diffusers'
HunyuanVideoTokenReplaceTransformerBlock and HunyuanVideoTokenReplaceSingleTransformerBlock):
the first latent frame is the picture's clean latents, so its tokens are modulated as at
timestep 0 (their own shift, scale and gate from the conditioning vector of timestep 0 plus
the pooled prompt, no guidance: `FirstFrame.temb`), the other tokens as the step's. The
weights are the plain blocks'; only which modulation a token reads differs (the stream is
cut around the first frame and joined again for each modulated norm and gated residual: a
few copies of it a block, small beside the attention).

    first = FirstFrame(temb_at_zero, silu(temb_at_zero), count=rows * columns)
    x, context = block(x, context, temb, tables, first=first)       # double stream
    x = single(x, temb, tables, first=first.at(text_length))        # text then image
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, replace
from itertools import pairwise

from gpustd import Tensor, concatenate, take_slice

from .dit_layers import AdaLayerNormZero, JointTransformerBlock, Rope, modulated_norm_of
from .flux import FluxSingleTransformerBlock
from .transformer_ops import Modulation, gated_add, norm_modulate

__all__ = ["FirstFrame", "TokenReplaceSingleTransformerBlock", "TokenReplaceTransformerBlock"]


@dataclass(frozen=True)
class FirstFrame:
    """The first frame's `count` tokens from `start` on in a stream (B, L, dim), and the
    conditioning vector temb (B, dim) they are modulated with, `activated` = silu(temb) (once
    for every block). diffusers: `token_replace_emb`, `first_frame_num_tokens`."""

    temb: Tensor
    activated: Tensor
    count: int
    start: int = 0

    def at(self, start: int) -> FirstFrame:
        """The same tokens `start` places further on (after the text in the single stream)."""
        return replace(self, start=self.start + start)

    def _pieces(self, x: Tensor) -> list[tuple[Tensor, bool]]:
        """x's tokens before, of and after the first frame (the empty left out), each with
        whether it is the first frame's."""
        bounds = (0, self.start, self.start + self.count, x.shape[1])
        return [(take_slice(x, lo, hi, axis=1), k == 1)
                for k, (lo, hi) in enumerate(pairwise(bounds)) if hi > lo]

    def norm(self, x: Tensor, first: Modulation, rest: Modulation, shift: int, scale: int
             ) -> Tensor:
        """The modulated norm of x, its first-frame tokens through `first`'s chunks, the
        others through `rest`'s. torch: `cat([norm(x[:, :n]) * (1 + tr_scale) + tr_shift,
        norm(x[:, n:]) * (1 + scale) + shift], 1)`."""
        return concatenate([norm_modulate(piece, (first if own else rest)[shift],
                                          (first if own else rest)[scale])
                            for piece, own in self._pieces(x)], axis=1)

    def gated(self, residual: Tensor, first: Modulation, rest: Modulation, gate: int,
              y: Tensor) -> Tensor:
        """residual + gate * y, the first frame's tokens gated by `first`'s chunk."""
        ys = [piece for piece, _ in self._pieces(y)]
        return concatenate([gated_add(piece, (first if own else rest)[gate], part)
                            for (piece, own), part in zip(self._pieces(residual), ys)], axis=1)


class TokenReplaceTransformerBlock(JointTransformerBlock):
    """The double-stream block reading `first`: the image stream's modulations split at the
    first frame (the text's as the plain block's). diffusers:
    `HunyuanVideoTokenReplaceTransformerBlock`."""

    def forward(self, x: Tensor, context: Tensor, temb: Tensor, rotary: Rope = None, *,
                activated: Tensor | None = None, mask: Tensor | None = None,
                first: FirstFrame | None = None) -> tuple[Tensor, Tensor | None]:
        if first is None:
            return super().forward(x, context, temb, rotary, activated=activated, mask=mask)
        mods = self.norm1.modulation(temb, activated)
        own = self.norm1.modulation(first.temb, first.activated)
        text = typing.cast(AdaLayerNormZero, self.norm1_context).modulation(temb, activated)
        context_in = modulated_norm_of(context, text, 0, 1, self.attn.text_inputs())
        image, context_attn = self.attn(first.norm(x, own, mods, 0, 1), context_in, rotary,
                                        mask)
        x = first.gated(x, own, mods, 2, image)
        x = first.gated(x, own, mods, 5, self.ff(first.norm(x, own, mods, 3, 4)))
        context = gated_add(context, text[2], typing.cast(Tensor, context_attn))
        return x, self.ff_context.gated(context, text[5], modulated_norm_of(
            context, text, 3, 4, self.ff_context.input_layers()))


class TokenReplaceSingleTransformerBlock(FluxSingleTransformerBlock):
    """The single-stream block reading `first` (its start past the text tokens). diffusers:
    `HunyuanVideoTokenReplaceSingleTransformerBlock`."""

    def forward(self, x: Tensor, temb: Tensor, rotary: Rope, *,
                activated: Tensor | None = None, mask: Tensor | None = None,
                first: FirstFrame | None = None) -> Tensor:
        if first is None:
            return super().forward(x, temb, rotary, activated=activated, mask=mask)
        mods = self.norm.modulation(temb, activated)
        own = self.norm.modulation(first.temb, first.activated)
        joint = self.joint(first.norm(x, own, mods, 0, 1), rotary, mask, x.dtype)
        return first.gated(x, own, mods, 2, self.proj_out(joint))
