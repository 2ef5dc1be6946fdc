"""HiDream-I1's transformer blocks (diffusers' names, models/transformers/
transformer_hidream_image.py): the SwiGLU feed-forward, the mixture of experts (a shared
expert plus the gate's top-k routed ones), attention with q/k RMS norms over all heads
together, and the double-stream and single-stream blocks, whose text is the kept T5 + Llama
tokens plus the block's own Llama layer, attended to and then dropped."""

from __future__ import annotations

import typing

import numpy as np

from gpustd import Tensor, asarray, concatenate, empty, nn, take_slice
from gpustd.gather import gather

from .flux2 import swiglu
from .layers import Place
from .transformer_ops import Modulation, RMSNorm, gated_add

_EPS = 1e-5  # HiDreamAttention's q/k RMSNorm eps

# (cos, sin) float32 (L, 1, heads * head_dim): the rotary tables repeated for every head, so
# that one pass norms a whole row (the norm spans the heads) and turns each head's pairs
Rope = tuple[Tensor, Tensor]


class FeedForwardSwiGLU(nn.Module):
    """w2(silu(w1 x) * w3 x), no biases. diffusers: `HiDreamImageFeedForwardSwiGLU` (its
    rounded hidden width read from the weights' shapes)."""

    def __init__(self, dim: int, hidden: int, place: Place) -> None:
        self.w1 = nn.Linear(dim, hidden, False, **place)
        self.w2 = nn.Linear(hidden, dim, False, **place)
        self.w3 = nn.Linear(dim, hidden, False, **place)

    def hidden(self, x: Tensor) -> Tensor:
        """w2's input silu(w1 x) * w3 x."""
        return swiglu(self.w1(x), self.w3(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(self.hidden(x))


def swiglu_width(dim: int, hidden: int, multiple_of: int = 256) -> int:
    """HiDreamImageFeedForwardSwiGLU(dim, hidden)'s width: 2/3 of hidden rounded up to
    multiple_of."""
    width = int(2 * hidden / 3)
    return multiple_of * ((width + multiple_of - 1) // multiple_of)


def route(logits: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """The gate's choice for each token from its logits (N, experts): the top_k experts of
    softmax(logits) (in increasing expert order) and their unnormalised scores, rounded to the
    logits' dtype. diffusers: `MoEGate` at inference (softmax, topk, norm_topk_prob False)."""
    wide = logits.astype(np.float32)
    scores = np.exp(wide - wide.max(axis=1, keepdims=True))
    scores = (scores / scores.sum(axis=1, keepdims=True)).astype(logits.dtype)
    chosen = np.sort(np.argsort(-scores, axis=1, kind="stable")[:, :top_k], axis=1)
    return chosen, np.take_along_axis(scores, chosen, axis=1)


class MoEFeedForward(nn.Module):
    """shared_experts(x) + sum over the gate's top_k experts e of score_e * experts[e](x).
    The gate's logits are read back and routed on the host (one small read and one upload of
    indices per call); each expert runs on its tokens only, gathered, and the weighted outputs
    are gathered back per token, summed in expert order as diffusers' scatter_reduce adds
    them. diffusers:
    `MOEFeedForwardSwiGLU` (its `moe_infer`)."""

    # --int8 leaves the gate float (models/int8.targets): its 4 rows pick each token's
    # experts, and a rounding that flips a choice changes the token's whole output
    float_linears = ("gate",)

    def __init__(self, dim: int, experts: int, top_k: int, place: Place) -> None:
        self.top_k = top_k
        self.shared_experts = FeedForwardSwiGLU(dim, swiglu_width(dim, 2 * dim), place)
        self.experts = nn.ModuleList([FeedForwardSwiGLU(dim, swiglu_width(dim, 4 * dim), place)
                                      for _ in range(experts)])
        self.gate = nn.Linear(dim, experts, False, **place)  # MoEGate's weight (experts, dim)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        chosen, scores = route(self.gate(flat).numpy(), self.top_k)
        # one upload of every index: each expert's tokens in turn, then for each choice the
        # row of the experts' joint output holding each token's result
        picks = [np.nonzero(chosen == index) for index in range(len(self.experts))]
        rows = np.zeros(chosen.shape, np.int32)
        start = 0
        for tokens, slot in picks:
            rows[tokens, slot] = start + np.arange(len(tokens))
            start += len(tokens)
        indices = asarray(np.concatenate([tokens for tokens, _ in picks] + list(rows.T))
                          .astype(np.int32), device=x.device)
        weights = np.concatenate([scores[tokens, slot] for tokens, slot in picks])
        outputs, start = [], 0
        for expert, (tokens, _) in zip(self.experts, picks):
            if len(tokens):
                outputs.append(expert(gather(flat, take_slice(indices, start,
                                                              start + len(tokens)), 0)))
                start += len(tokens)
        routed = (concatenate(outputs, axis=0) if len(outputs) > 1 else outputs[0]) \
            * asarray(weights.reshape(-1, 1), device=x.device)
        count = flat.shape[0]
        total = None
        for choice in range(self.top_k):  # summed in expert order, as scatter_reduce adds
            at = start + choice * count
            part = gather(routed, take_slice(indices, at, at + count), 0)
            total = part if total is None else total + part
        return (typing.cast(Tensor, total) + self.shared_experts(flat)).reshape(shape)


class HiDreamAttention(nn.Module):
    """Image (to_q/k/v, to_out) and, for a double-stream block, text (the `_t` twins)
    projections; q and k RMS-normed over all heads at once (eps 1e-5), the image's then the
    text's written into one joint q / k, rotated by the tables (text positions are zeros:
    unturned). diffusers: `HiDreamAttention` with `HiDreamAttnProcessor`."""

    to_q: nn.Linear  # the layers forward reads by name, set in __init__'s loop
    to_out: nn.Linear
    to_out_t: nn.Linear  # double-stream blocks only

    def __init__(self, dim: int, heads: int, head_dim: int, place: Place, *,
                 single: bool) -> None:
        inner = heads * head_dim
        self.heads = heads
        for suffix in ("",) if single else ("", "_t"):  # the image's layers, the text's
            for name in ("q", "k", "v"):
                setattr(self, f"to_{name}{suffix}", nn.Linear(dim, inner, **place))
            setattr(self, f"to_out{suffix}", nn.Linear(inner, dim, **place))
            for name in ("q", "k"):
                setattr(self, f"{name}_rms_norm{suffix}", RMSNorm(inner, _EPS, place=place))

    def attend(self, parts: list[tuple[str, Tensor]], rotary: Rope,
               keys: Tensor | None) -> Tensor:
        """Attention over the tokens of every (suffix, x) part, image first; `keys` (B, L, 1)
        the image keys' mask (0 for padding, multiplied in as diffusers does: a padded key
        scores 0, it is not removed). The output before the output projections."""
        first = parts[0][1]
        total = sum(x.shape[1] for _, x in parts)
        shape = (first.shape[0], total, self.to_q.weight.shape[0])
        q = empty(shape, first.dtype, device=first.device)
        k = empty(shape, first.dtype, device=first.device)
        values, start = [], 0
        for suffix, x in parts:  # q, k, v of one input in one GEMM where it can
            projected = nn.Linear.each(x, [getattr(self, f"to_{name}{suffix}")
                                           for name in ("q", "k", "v")])
            for joint, part, name in ((q, projected[0], "q"), (k, projected[1], "k")):
                norm = getattr(self, f"{name}_rms_norm{suffix}")
                nn.rms_norm_rope(part, norm.weight, rotary if suffix == "" else None, heads=1,
                                 eps=_EPS, out=joint, start=start)
            values.append(projected[2])
            start += x.shape[1]
        if keys is not None:
            k = k * keys
        v = concatenate(values, axis=1) if len(values) > 1 else values[0]
        return nn.attention(q, k, v, heads=self.heads)


class _Activated(nn.Module):
    """nn.Sequential(SiLU, Linear)'s names: `1` the linear, fed silu(temb) computed once."""

    def __init__(self, dim: int, width: int, place: Place) -> None:
        setattr(self, "0", nn.Identity())
        setattr(self, "1", nn.Linear(dim, width, **place))

    def forward(self, activated: Tensor, count: int) -> Modulation:
        return Modulation(getattr(self, "1")(activated), count)


class DoubleStreamBlock(nn.Module):
    """Image tokens and text tokens with their own weights meeting in one attention; the
    image feed-forward the MoE, the text's a SwiGLU. diffusers:
    `HiDreamImageTransformerBlock`."""

    def __init__(self, dim: int, heads: int, head_dim: int, experts: int, top_k: int,
                 place: Place) -> None:
        self.adaLN_modulation = _Activated(dim, 12 * dim, place)
        self.attn1 = HiDreamAttention(dim, heads, head_dim, place, single=False)
        self.ff_i = (MoEFeedForward(dim, experts, top_k, place) if experts else
                     FeedForwardSwiGLU(dim, swiglu_width(dim, 4 * dim), place))
        self.ff_t = FeedForwardSwiGLU(dim, swiglu_width(dim, 4 * dim), place)

    def forward(self, x: Tensor, text: Tensor, extra: Tensor, activated: Tensor,
                rotary: Rope, keys: Tensor | None) -> tuple[Tensor, Tensor]:
        """x (B, Li, dim) image tokens; text (B, Lt, dim) the kept text; extra (B, Le, dim)
        this block's Llama layer, attended to but not returned (diffusers cuts its output
        off: here it is never computed)."""
        mods = self.adaLN_modulation(activated, 12)
        length = x.shape[1]
        image = mods.norm(x, 0, 1)
        context = mods.norm(concatenate([text, extra], axis=1), 6, 7)
        out = self.attn1.attend([("", image), ("_t", context)], rotary, keys)
        attn = self.attn1
        x = mods.gated_linear(2, x, attn.to_out, take_slice(out, 0, length, axis=1))
        text = mods.gated_linear(8, text, attn.to_out_t,
                                 take_slice(out, length, length + text.shape[1], axis=1))
        x = gated_add(x, mods[5], self.ff_i(mods.norm(x, 3, 4)))
        ff_t = self.ff_t
        text = mods.gated_linear(11, text, ff_t.w2, ff_t.hidden(mods.norm(text, 9, 10)))
        return x, text


class SingleStreamBlock(nn.Module):
    """Image and text tokens in one stream with one set of weights; the feed-forward the MoE.
    diffusers: `HiDreamImageSingleTransformerBlock`."""

    def __init__(self, dim: int, heads: int, head_dim: int, experts: int, top_k: int,
                 place: Place) -> None:
        self.adaLN_modulation = _Activated(dim, 6 * dim, place)
        self.attn1 = HiDreamAttention(dim, heads, head_dim, place, single=True)
        self.ff_i = (MoEFeedForward(dim, experts, top_k, place) if experts else
                     FeedForwardSwiGLU(dim, swiglu_width(dim, 4 * dim), place))

    def forward(self, x: Tensor, extra: Tensor, activated: Tensor, rotary: Rope,
                keys: Tensor | None) -> Tensor:
        """x (B, L, dim): image then kept text tokens; extra (B, Le, dim) this block's Llama
        layer, attended to and dropped (only x's tokens come back)."""
        mods = self.adaLN_modulation(activated, 6)
        normed = mods.norm(concatenate([x, extra], axis=1), 0, 1)
        out = self.attn1.attend([("", normed)], rotary, keys)
        x = mods.gated_linear(2, x, self.attn1.to_out, take_slice(out, 0, x.shape[1], axis=1))
        return gated_add(x, mods[5], self.ff_i(mods.norm(x, 3, 4)))


class Wrapped(nn.Module):
    """diffusers' `HiDreamBlock`: the block under the name `block`."""

    def __init__(self, block: nn.Module) -> None:
        self.block = block
