"""Layers the diffusion transformers share (FLUX and SD3's MMDiT), with diffusers' names:
time/text embeddings, adaLN modulations, the gelu-tanh feed-forward, joint attention over text
and image tokens, and the double-stream (joint) block both models are built of."""

from __future__ import annotations

import typing
from typing import Any

import numpy as np

from gpustd import Tensor, concatenate, nn, take_slice
from gpustd.nn.int8_rows import gelu_int8, layer_norm_int8

from .layers import Place
from .transformer_ops import (
    Modulation,
    RMSNorm,
    chunks,
    gated_add,
    gated_linear,
    joint_norm_rope,
    norm_modulate,
    norm_rope,
)

# (cos, sin) tables of rope_tables, or None for models without rotary embeddings (SD3)
Rope = tuple[Tensor, Tensor] | None


def layer_norm(x: Tensor) -> Tensor:
    """The transformers' parameterless LayerNorm(dim, elementwise_affine=False, eps=1e-6)."""
    return nn.layer_norm(x, None, None, eps=1e-6)


def modulated_norm(x: Tensor, shift: Tensor, scale: Tensor, readers: list[nn.Linear]) -> Tensor:
    """modulate(layer_norm(x), shift, scale) for the linear layers `readers` that take it:
    where they are --int8's W8A8 layers sharing one smoothing, one pass that also quantizes
    it for them (gpustd.nn.int8_rows, the same values and int8 rows as the separate passes);
    else one pass of the norm and the modulation (transformer_ops.norm_modulate)."""
    found = nn.Linear.int8_input(readers)
    if found is not None and shift.dtype == scale.dtype == x.dtype:
        return layer_norm_int8(x, shift, scale, eps=1e-6, smooth=found[0])
    return norm_modulate(x, shift, scale)


def modulated_norm_of(x: Tensor, mods: Modulation, shift: int, scale: int,
                      readers: list[nn.Linear]) -> Tensor:
    """modulated_norm(x, mods[shift], mods[scale], readers), the chunks read in place from
    the adaLN linear's output where no --int8 layer needs the quantizing pass
    (Modulation.norm: one pass, no copies of the chunks)."""
    if nn.Linear.int8_input(readers) is not None:
        return modulated_norm(x, mods[shift], mods[scale], readers)
    return mods.norm(x, shift, scale)


def silu_of(temb: Tensor, activated: Tensor | None) -> Tensor:
    """silu(temb), or `activated` where the caller computed it once for every block."""
    return nn.silu(temb) if activated is None else activated


class TimestepEmbedding(nn.Module):
    """linear_1, SiLU, linear_2. diffusers: `TimestepEmbedding` (and, with the same names,
    `PixArtAlphaTextProjection(act_fn="silu")`; FLUX.2's without biases)."""

    def __init__(self, in_dim: int, dim: int, place: Place, *, bias: bool = True) -> None:
        self.linear_1 = nn.Linear(in_dim, dim, bias, **place)
        self.linear_2 = nn.Linear(dim, dim, bias, **place)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(nn.silu(self.linear_1(x)))


class CombinedTimestepTextProjEmbeddings(nn.Module):
    """The conditioning vector temb (B, dim): embedded timestep (+ embedded guidance for
    FLUX dev) + projected pooled text. diffusers: `CombinedTimestepTextProjEmbeddings`, and
    `CombinedTimestepGuidanceTextProjEmbeddings` with `guidance=True`."""

    def __init__(self, dim: int, pooled_dim: int, place: Place, *, guidance: bool) -> None:
        self.dtype = place["dtype"]
        self.timestep_embedder = TimestepEmbedding(256, dim, place)
        if guidance:
            self.guidance_embedder = TimestepEmbedding(256, dim, place)
        self.text_embedder = TimestepEmbedding(pooled_dim, dim, place)

    def _sinusoid(self, values: Any, device: Any) -> Tensor:
        if not isinstance(values, Tensor):  # host numbers: uploaded here
            values = np.asarray(values, np.float32).reshape(-1)
        return nn.timestep_embedding(values, 256, flip_sin_to_cos=True, downscale_freq_shift=0,
                                     dtype=self.dtype, device=device)

    def forward(self, timestep: Any, pooled: Tensor, guidance: Any = None) -> Tensor:
        """timestep, guidance: (B,) host numbers or float32 Tensors (what a captured step
        passes), already scaled as the model wants."""
        return self.with_text(timestep, self.text_embedder(pooled), guidance)

    def with_text(self, timestep: Any, text: Tensor, guidance: Any = None) -> Tensor:
        """forward with the pooled text already through `text_embedder` (a prompt's, made
        once for every step)."""
        device = text.device
        temb = self.timestep_embedder(self._sinusoid(timestep, device))
        if guidance is not None:
            temb = temb + self.guidance_embedder(self._sinusoid(guidance, device))
        return temb + text


class AdaLayerNormZero(nn.Module):
    """`linear(silu(temb))` split into `chunks` modulation vectors (6: adaLN-Zero; 9: SD3.5's
    `SD35AdaLayerNormZeroX` with a second attention's shift/scale/gate; 3: FLUX's
    `AdaLayerNormZeroSingle`), each (B, 1, dim)."""

    def __init__(self, dim: int, place: Place, *, count: int = 6) -> None:
        self.count = count
        self.linear = nn.Linear(dim, count * dim, **place)

    def forward(self, temb: Tensor) -> list[Tensor]:
        return chunks(self.linear(nn.silu(temb)), self.count)

    def modulation(self, temb: Tensor, activated: Tensor | None = None) -> Modulation:
        """forward's chunks left in the linear's output: a norm reads them in place, a
        chunk is copied only where a consumer takes it (`Modulation[i]`). `activated`:
        silu(temb) where the caller has it (one SiLU per step for all the blocks)."""
        return Modulation(self.linear(silu_of(temb, activated)), self.count)


class AdaLayerNormContinuous(nn.Module):
    """norm(x) * (1 + scale) + shift with (scale, shift) = linear(silu(temb)) — scale first.
    diffusers: `AdaLayerNormContinuous(dim, dim, elementwise_affine=False, eps=1e-6)`
    (FLUX.2's with `bias=False`)."""

    def __init__(self, dim: int, place: Place, *, bias: bool = True) -> None:
        self.linear = nn.Linear(dim, 2 * dim, bias, **place)

    def forward(self, x: Tensor, temb: Tensor, activated: Tensor | None = None) -> Tensor:
        """`activated`: silu(temb) where the caller has it."""
        return Modulation(self.linear(silu_of(temb, activated)), 2).norm(x, shift=1, scale=0)


class GELU(nn.Module):
    def __init__(self, dim: int, inner: int, place: Place, *, bias: bool = True) -> None:
        self.proj = nn.Linear(dim, inner, bias, **place)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj.gelu(x, approximate="tanh")  # in the GEMM's epilogue where it can


class FeedForward(nn.Module):
    """net.0 (Linear + tanh GELU), net.2 (Linear). diffusers: `FeedForward(dim, dim,
    activation_fn="gelu-approximate")` (net.1 is its dropout, no parameters); `bias=False`
    drops both biases (LTX-2's `ff_bias=False`)."""

    def __init__(self, dim: int, place: Place, mult: int = 4, *, bias: bool = True) -> None:
        self.net = nn.ModuleList([GELU(dim, mult * dim, place, bias=bias), nn.Identity(),
                                  nn.Linear(mult * dim, dim, bias, **place)])

    def input_layers(self) -> list[nn.Linear]:
        """The layers that read forward's x (modulated_norm's readers)."""
        return [typing.cast(GELU, self.net[0]).proj]

    def gated(self, residual: Tensor, gate: Tensor, x: Tensor) -> Tensor:
        """gated_add(residual, gate, self(x)), net.2's GEMM applying the gate and the
        residual where it can (transformer_ops.gated_linear)."""
        out = typing.cast(nn.Linear, self.net[2])
        if type(self) is not FeedForward or "forward" in vars(self) or not out.plain():
            return gated_add(residual, gate, self(x))
        return gated_linear(residual, gate, out, self.net[0](x))

    def forward(self, x: Tensor) -> Tensor:
        gelu, out = self.net[0], typing.cast(nn.Linear, self.net[2])
        found = nn.Linear.int8_input([out])
        if found is not None and type(gelu) is GELU and "forward" not in vars(gelu):
            # --int8: the GELU's pass quantizes its rows for the W8A8 net.2 (gpustd.nn.int8_rows)
            return out(gelu_int8(gelu.proj(x), approximate="tanh", smooth=found[0]))
        return out(gelu(x))


class JointAttention(nn.Module):
    """Multi-head attention over the image tokens x and, when given, the text tokens
    together (text first): the image's to_q/to_k/to_v/to_out.0, the text's add_*_proj and
    to_add_out, optional per-head RMS norms of q and k (norm_q, norm_k, norm_added_q,
    norm_added_k) and optional rotary embeddings; `bias=False` drops every projection's
    bias (FLUX.2's `Flux2Attention`). diffusers: `FluxAttention`, and
    `Attention` with `JointAttnProcessor2_0` (which orders image first: the same result,
    attention having no order but RoPE's)."""

    def __init__(self, dim: int, heads: int, head_dim: int, place: Place, *,
                 qk_norm: bool, context: bool, context_out: bool = True,
                 out: bool = True, eps: float = 1e-6, bias: bool = True) -> None:
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        for prefix, present in (("", True), ("added_", context)):
            if present and qk_norm:
                setattr(self, f"norm_{prefix}q", RMSNorm(head_dim, eps, place=place))
                setattr(self, f"norm_{prefix}k", RMSNorm(head_dim, eps, place=place))
        self.to_q = nn.Linear(dim, inner, bias, **place)
        self.to_k = nn.Linear(dim, inner, bias, **place)
        self.to_v = nn.Linear(dim, inner, bias, **place)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim, bias, **place)]) if out else None
        if context:
            self.add_q_proj = nn.Linear(dim, inner, bias, **place)
            self.add_k_proj = nn.Linear(dim, inner, bias, **place)
            self.add_v_proj = nn.Linear(dim, inner, bias, **place)
            self.to_add_out = nn.Linear(inner, dim, bias, **place) if context_out else None

    def image_inputs(self, also: tuple[nn.Linear, ...] = ()) -> list[nn.Linear]:
        """The layers that read the image tokens (projections' x), `also` after them."""
        return [self.to_q, self.to_k, self.to_v, *also]

    def text_inputs(self) -> list[nn.Linear]:
        """The layers that read the text tokens (projections' context)."""
        return [self.add_q_proj, self.add_k_proj, self.add_v_proj]

    def projections(self, x: Tensor, context: Tensor | None = None,
                    also: tuple[nn.Linear, ...] = (), rotary: Rope = None
                    ) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
        """q, k, v of x (B, Lx, dim) and context (B, Lc, dim) when given (text first,
        QK-normed and rotated by `rotary`, one pass for each stream's q or k, written in place
        into the joint one), and [layer(x) for layer in also]: each input's projections
        through nn.Linear.each, so --int8's W8A8 layers quantize it once."""
        q, k, v, *extra = nn.Linear.each(x, self.image_inputs(also))
        norm = self._norm
        if context is None:
            return (norm_rope(norm("q"), q, rotary, self.heads),
                    norm_rope(norm("k"), k, rotary, self.heads), v, extra)
        cq, ck, cv = nn.Linear.each(context, self.text_inputs())
        return (joint_norm_rope([(norm("added_q"), cq), (norm("q"), q)], rotary, self.heads),
                joint_norm_rope([(norm("added_k"), ck), (norm("k"), k)], rotary, self.heads),
                concatenate([cv, v], axis=1), extra)

    def _norm(self, name: str) -> RMSNorm | None:
        """The q/k norm `norm_<name>` (q, k, added_q, added_k), None without QK-norm."""
        return getattr(self, f"norm_{name}", None)

    def forward(self, x: Tensor, context: Tensor | None = None, rotary: Rope = None,
                mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """x (B, Lx, dim), context (B, Lc, dim) -> (image output, text output or None).
        `mask`: keys kept, nonzero (B, 1, 1, Lc + Lx) uint32 (Chroma's text padding)."""
        q, k, v, _ = self.projections(x, context, rotary=rotary)
        return self.attend(q, k, v, context.shape[1] if context is not None else None, mask)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, text: int | None,
               mask: Tensor | None = None, *, project_image: bool = True
               ) -> tuple[Tensor, Tensor | None]:
        """Attention of projections' q, k, v (`text` tokens of context first, None for
        none), then the output projections: forward's (image output, text output or None);
        with `project_image=False` the image's attention before to_out (a caller applying
        to_out itself, with its gated residual in the GEMM: gated_linear)."""
        out = nn.attention(q, k, v, heads=self.heads, mask=mask)
        to_out = self.to_out if project_image else None
        if text is None:
            return (to_out[0](out) if to_out is not None else out), None
        tokens = take_slice(out, 0, text, axis=1)
        image = take_slice(out, text, out.shape[1], axis=1)
        out_text = self.to_add_out(tokens) if self.to_add_out is not None else None
        return (to_out[0](image) if to_out is not None else image), out_text

    def gated(self, residual: Tensor, gate: Tensor, x: Tensor, context: Tensor | None = None,
              rotary: Rope = None, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(gated_add(residual, gate, image output), text output) of forward(x, context,
        rotary, mask), to_out's GEMM applying the gate and the residual where it can
        (transformer_ops.gated_linear); forward itself where it was replaced (a hook)."""
        to_out = self.to_out
        if type(self) is not JointAttention or "forward" in vars(self) or to_out is None:
            image, text = self(x, context, rotary) if mask is None else self(x, context,
                                                                             rotary, mask)
            return gated_add(residual, gate, image), text
        q, k, v, _ = self.projections(x, context, rotary=rotary)
        heads, text = self.attend(q, k, v, context.shape[1] if context is not None else None,
                                  mask, project_image=False)
        return gated_linear(residual, gate, to_out[0], heads), text


class JointTransformerBlock(nn.Module):
    """The double-stream block: image and text tokens keep their own weights and meet in
    one attention. FLUX: `FluxTransformerBlock` (QK-norm, RoPE); SD3: `JointTransformerBlock`
    (QK-norm for 3.5, `dual` = SD3.5 Medium's second, image-only attention `attn2`,
    `context_pre_only` for the last block, whose text stream ends there)."""

    # each stream's feed-forward (`ff`, `ff_context`); Ovis-Image's is a SwiGLU
    feed_forward: type[FeedForward] = FeedForward

    def __init__(self, dim: int, heads: int, head_dim: int, place: Place, *, qk_norm: bool,
                 context_pre_only: bool = False, dual: bool = False) -> None:
        self.context_pre_only, self.dual = context_pre_only, dual
        self.norm1 = AdaLayerNormZero(dim, place, count=9 if dual else 6)
        self.norm1_context = (AdaLayerNormContinuous(dim, place) if context_pre_only
                              else AdaLayerNormZero(dim, place))
        self.attn = JointAttention(dim, heads, head_dim, place, qk_norm=qk_norm, context=True,
                                   context_out=not context_pre_only)
        if dual:
            self.attn2 = JointAttention(dim, heads, head_dim, place, qk_norm=qk_norm,
                                        context=False)
        self.ff = self.feed_forward(dim, place)
        if not context_pre_only:
            self.ff_context = self.feed_forward(dim, place)

    def modulated_input(self, x: Tensor, temb: Tensor) -> Tensor:
        """The image stream's first modulated norm, what attention reads (TeaCache's
        measure). diffusers: `block.norm1(x, emb=temb)[0]`."""
        return self.norm1.modulation(temb).norm(x, shift=0, scale=1)

    def forward(self, x: Tensor, context: Tensor, temb: Tensor, rotary: Rope = None, *,
                activated: Tensor | None = None, mask: Tensor | None = None
                ) -> tuple[Tensor, Tensor | None]:
        """(image (B, Lx, dim), text (B, Lc, dim) or None after a context_pre_only block).
        `activated`: silu(temb) where the model computed it once for all its blocks; `mask`:
        the keys kept, nonzero (B, 1, 1, Lc + Lx) uint32, text first (ragged prompts)."""
        # 1. modulations: adaLN-Zero's shift/scale/gate for attention and feed-forward
        # (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp, [shift2, scale2,
        # gate2]: chunks 0..8), the norms reading theirs in place
        mods = self.norm1.modulation(temb, activated)
        context_mods: Modulation | None = None
        if self.context_pre_only:
            context_in = self.norm1_context(context, temb, activated)
        else:
            context_mods = typing.cast(AdaLayerNormZero, self.norm1_context).modulation(
                temb, activated)
            context_in = modulated_norm_of(context, context_mods, 0, 1, self.attn.text_inputs())
        # 2. joint attention, gated residuals (to_out's GEMM applying the gate)
        source = x
        x, context_attn = self.attn.gated(
            x, mods[2], modulated_norm_of(x, mods, 0, 1, self.attn.image_inputs()), context_in,
            rotary, mask)
        if self.dual:  # the second attention reads the block's input too
            second = modulated_norm_of(source, mods, 6, 7, self.attn2.image_inputs())
            x = self.attn2.gated(x, mods[8], second)[0]
        # 3. feed-forward of each stream
        x = self.ff.gated(x, mods[5], modulated_norm_of(x, mods, 3, 4, self.ff.input_layers()))
        if context_mods is None:
            return x, None
        context = gated_add(context, context_mods[2], typing.cast(Tensor, context_attn))
        return x, self.ff_context.gated(context, context_mods[5], modulated_norm_of(
            context, context_mods, 3, 4, self.ff_context.input_layers()))
