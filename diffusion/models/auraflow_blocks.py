"""AuraFlow's transformer blocks (diffusers' AuraFlowJointTransformerBlock and
AuraFlowSingleTransformerBlock names): adaLN-Zero without biases, parameterless LayerNorms
(eps 1e-5) of the whole width and of each head's q and k, attention over text then image
tokens, and a SwiGLU feed-forward.

AuraFlow's residual differs from SD3's MMDiT: the attention's gated output is added to the
block's input and normalized again (`norm2`), and the block's output is its input plus the
gated feed-forward of that: `x + g_mlp * ff(mod(norm(x + g_msa * attn)))`; the attention's
own sum is not carried on."""

from __future__ import annotations

from gpustd import Tensor, concatenate, nn, take_slice

from .flux2 import swiglu
from .layers import Place
from .transformer_ops import Modulation, gated_add, modulate

__all__ = ["AuraFlowFeedForward", "AuraFlowJointTransformerBlock",
           "AuraFlowSingleTransformerBlock", "feed_forward_width"]

EPS = 1e-5  # FP32LayerNorm's default, every norm of the model's


def feed_forward_width(dim: int) -> int:
    """The SwiGLU's hidden width: 2/3 of 4 * dim rounded up to a multiple of 256.
    diffusers: `find_multiple(int(2 * 4 * dim / 3), 256)`."""
    hidden = int(2 * (4 * dim) / 3)
    return hidden if hidden % 256 == 0 else hidden + 256 - hidden % 256


class AuraFlowFeedForward(nn.Module):
    """out_projection(silu(linear_1 x) * linear_2 x), no biases. diffusers:
    `AuraFlowFeedForward(dim, 4 * dim)`."""

    def __init__(self, dim: int, place: Place) -> None:
        hidden = feed_forward_width(dim)
        self.linear_1 = nn.Linear(dim, hidden, False, **place)
        self.linear_2 = nn.Linear(dim, hidden, False, **place)
        self.out_projection = nn.Linear(hidden, dim, False, **place)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = nn.Linear.each(x, [self.linear_1, self.linear_2])
        return self.out_projection(swiglu(gate, up))


class AdaLayerNormZero(nn.Module):
    """`linear(silu(temb))`, no bias: the six shift/scale/gate vectors. diffusers:
    `AdaLayerNormZero(dim, bias=False, norm_type="fp32_layer_norm")`."""

    def __init__(self, dim: int, place: Place) -> None:
        self.linear = nn.Linear(dim, 6 * dim, False, **place)

    def forward(self, activated: Tensor) -> Modulation:
        """activated: silu(temb), computed once for every block."""
        return Modulation(self.linear(activated), 6)


def _head_norm(x: Tensor, heads: int) -> Tensor:
    """Each head's (B, L, heads * D) slice layer-normed over its D values (no weights)."""
    batch, length, width = x.shape
    normed = nn.layer_norm(x.reshape(batch, length * heads, width // heads), eps=EPS)
    return normed.reshape(batch, length, width)


class AuraFlowAttention(nn.Module):
    """Attention of the image tokens (to_q/k/v, to_out.0) and, in a joint block, the text
    tokens too (add_q/k/v_proj, to_add_out), text first; no biases, q and k normed per head.
    diffusers: `Attention(..., qk_norm="fp32_layer_norm", bias=False, out_bias=False)` with
    `AuraFlowAttnProcessor2_0`."""

    def __init__(self, dim: int, heads: int, head_dim: int, place: Place, *,
                 context: bool) -> None:
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, False, **place)
        self.to_k = nn.Linear(dim, inner, False, **place)
        self.to_v = nn.Linear(dim, inner, False, **place)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim, False, **place)])
        if context:
            self.add_q_proj = nn.Linear(dim, inner, False, **place)
            self.add_k_proj = nn.Linear(dim, inner, False, **place)
            self.add_v_proj = nn.Linear(dim, inner, False, **place)
            self.to_add_out = nn.Linear(inner, dim, False, **place)

    def forward(self, x: Tensor, context: Tensor | None = None
                ) -> tuple[Tensor, Tensor | None]:
        """(image output, text output or None) for x (B, Lx, dim), context (B, Lc, dim)."""
        heads = self.heads
        q, k, v = nn.Linear.each(x, [self.to_q, self.to_k, self.to_v])
        q, k = _head_norm(q, heads), _head_norm(k, heads)
        if context is None:
            return self.to_out[0](nn.attention(q, k, v, heads=heads)), None
        cq, ck, cv = nn.Linear.each(context, [self.add_q_proj, self.add_k_proj,
                                              self.add_v_proj])
        q = concatenate([_head_norm(cq, heads), q], axis=1)
        k = concatenate([_head_norm(ck, heads), k], axis=1)
        out = nn.attention(q, k, concatenate([cv, v], axis=1), heads=heads)
        text = context.shape[1]
        return (self.to_out[0](take_slice(out, text, out.shape[1], axis=1)),
                self.to_add_out(take_slice(out, 0, text, axis=1)))


def _finish(x: Tensor, attn: Tensor, mods: Modulation, ff: AuraFlowFeedForward) -> Tensor:
    """AuraFlow's residual: x + g_mlp * ff(modulate(norm(x + g_msa * attn)))."""
    mixed = nn.layer_norm(gated_add(x, mods[2], attn), eps=EPS)
    return gated_add(x, mods[5], ff(modulate(mixed, mods[3], mods[4])))


class AuraFlowJointTransformerBlock(nn.Module):
    """Image and text tokens with their own weights meeting in one attention. diffusers:
    `AuraFlowJointTransformerBlock`."""

    def __init__(self, dim: int, heads: int, head_dim: int, place: Place) -> None:
        self.norm1 = AdaLayerNormZero(dim, place)
        self.norm1_context = AdaLayerNormZero(dim, place)
        self.attn = AuraFlowAttention(dim, heads, head_dim, place, context=True)
        self.ff = AuraFlowFeedForward(dim, place)
        self.ff_context = AuraFlowFeedForward(dim, place)

    def forward(self, x: Tensor, context: Tensor, activated: Tensor) -> tuple[Tensor, Tensor]:
        """(image (B, Lx, dim), text (B, Lc, dim)); activated: silu(temb)."""
        mods, context_mods = self.norm1(activated), self.norm1_context(activated)
        image_out, text_out = self.attn(mods.norm(x, 0, 1, EPS),
                                        context_mods.norm(context, 0, 1, EPS))
        assert text_out is not None
        return (_finish(x, image_out, mods, self.ff),
                _finish(context, text_out, context_mods, self.ff_context))


class AuraFlowSingleTransformerBlock(nn.Module):
    """One stream of the text and image tokens together. diffusers:
    `AuraFlowSingleTransformerBlock`."""

    def __init__(self, dim: int, heads: int, head_dim: int, place: Place) -> None:
        self.norm1 = AdaLayerNormZero(dim, place)
        self.attn = AuraFlowAttention(dim, heads, head_dim, place, context=False)
        self.ff = AuraFlowFeedForward(dim, place)

    def forward(self, x: Tensor, activated: Tensor) -> Tensor:
        """x (B, Lc + Lx, dim), text first; activated: silu(temb)."""
        mods = self.norm1(activated)
        return _finish(x, self.attn(mods.norm(x, 0, 1, EPS))[0], mods, self.ff)
