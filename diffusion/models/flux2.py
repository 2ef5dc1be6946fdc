"""The FLUX.2 transformer (diffusers' Flux2Transformer2DModel names): double-stream blocks
and parallel single-stream blocks that all read one shared modulation per stream (computed
once from the timestep embedding, not per block), SwiGLU feed-forwards, bias-free
projections and rotary embeddings over 4 position axes (t, h, w, l). klein (4B/9B) and dev
differ in sizes and `guidance_embeds`."""

from __future__ import annotations

import math
import typing
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, concatenate, elementwise_kernel, nn, take_slice

from .dit_layers import (
    AdaLayerNormContinuous,
    JointAttention,
    Rope,
    TimestepEmbedding,
    modulated_norm_of,
    silu_of,
)
from .layers import Place
from .step_cache import BranchCache, run_blocks
from .transformer_ops import (
    Modulation,
    RMSNorm,
    cast,
    chunks,
    gated_add,
    gated_linear,
    norm_rope,
    rope_heads,
    rope_tables,
)

_DEFAULTS: dict[str, Any] = {
    "patch_size": 1, "in_channels": 128, "out_channels": None, "num_layers": 8,
    "num_single_layers": 48, "attention_head_dim": 128, "num_attention_heads": 48,
    "joint_attention_dim": 15360, "timestep_guidance_channels": 256, "mlp_ratio": 3.0,
    "axes_dims_rope": (32, 32, 32, 32), "rope_theta": 2000, "eps": 1e-6,
    "guidance_embeds": True,
}


@elementwise_kernel
def _swiglu(gate, up):
    g = float(gate)
    return g / (1.0 + math.exp(-g)) * float(up)


@elementwise_kernel
def _swiglu_f16(gate, up):  # float16 out: the cast pass after _swiglu, the same bits
    g = float(gate)
    return np.float16(g / (1.0 + math.exp(-g)) * float(up))


def swiglu(gate: Tensor, up: Tensor) -> Tensor:
    """silu(gate) * up in gate's dtype (computed in float32, rounded once). diffusers:
    `Flux2SwiGLU` over their concatenation."""
    kernel = _swiglu_f16 if gate.dtype == np.float16 else _swiglu
    return cast(typing.cast(Tensor, kernel(gate, up)), gate.dtype)


def _halves(x: Tensor, start: int, width: int) -> tuple[Tensor, Tensor]:
    """x[..., start:start+width] and x[..., start+width:start+2*width] (the gate and value
    halves of a fused SwiGLU projection)."""
    axis = x.ndim - 1
    return (take_slice(x, start, start + width, axis=axis),
            take_slice(x, start + width, start + 2 * width, axis=axis))


class Flux2Modulation(nn.Module):
    """`linear(silu(temb))` split into `sets` (shift, scale, gate) triples, each (B, 1, dim):
    2 for a double-stream block's attention and feed-forward, 1 for the single blocks."""

    def __init__(self, dim: int, place: Place, *, sets: int) -> None:
        self.sets = sets
        self.linear = nn.Linear(dim, 3 * sets * dim, False, **place)

    def forward(self, temb: Tensor) -> list[Tensor]:
        return chunks(self.linear(nn.silu(temb)), 3 * self.sets)

    def modulation(self, temb: Tensor, activated: Tensor | None = None) -> Modulation:
        """forward's chunks left in the linear's output: the norms read their shift and
        scale in place, a gate is copied once where a block takes it. `activated`: silu(temb)
        where the caller has it."""
        return Modulation(self.linear(silu_of(temb, activated)), 3 * self.sets)


class Flux2FeedForward(nn.Module):
    """linear_out(silu(a) * b) with (a, b) the halves of linear_in(x). diffusers:
    `Flux2FeedForward`."""

    def __init__(self, dim: int, inner: int, place: Place) -> None:
        self.inner = inner
        self.linear_in = nn.Linear(dim, 2 * inner, False, **place)
        self.linear_out = nn.Linear(inner, dim, False, **place)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_out(self.hidden(x))

    def hidden(self, x: Tensor) -> Tensor:
        """linear_out's input: silu(a) * b."""
        return swiglu(*_halves(self.linear_in(x), 0, self.inner))

    def gated(self, residual: Tensor, gate: Tensor, x: Tensor) -> Tensor:
        """gated_add(residual, gate, self(x)), linear_out's GEMM applying the gate and the
        residual where it can (transformer_ops.gated_linear)."""
        if "forward" in vars(self) or not self.linear_out.plain():
            return gated_add(residual, gate, self(x))
        return gated_linear(residual, gate, self.linear_out, self.hidden(x))


class Flux2TransformerBlock(nn.Module):
    """The double-stream block: FLUX.1's, with its modulations given and SwiGLU
    feed-forwards. diffusers: `Flux2TransformerBlock`."""

    def __init__(self, dim: int, heads: int, head_dim: int, mlp_inner: int, place: Place,
                 eps: float) -> None:
        self.attn = JointAttention(dim, heads, head_dim, place, qk_norm=True, context=True,
                                   eps=eps, bias=False)
        self.ff = Flux2FeedForward(dim, mlp_inner, place)
        self.ff_context = Flux2FeedForward(dim, mlp_inner, place)

    def forward(self, x: Tensor, context: Tensor, image_mods: Modulation,
                text_mods: Modulation, rotary: Rope) -> tuple[Tensor, Tensor]:
        """x (B, Li, dim), context (B, Lt, dim); the mods: Flux2Modulation(sets=2)'s
        (shift, scale, gate of attention, then of the feed-forward), the norms reading
        theirs in place."""
        # 1. joint attention over the modulated norms, gated residuals (the image's in
        # to_out's GEMM where it takes them)
        x, context_attn = self.attn.gated(
            x, image_mods[2], modulated_norm_of(x, image_mods, 0, 1, self.attn.image_inputs()),
            modulated_norm_of(context, text_mods, 0, 1, self.attn.text_inputs()), rotary)
        context = gated_add(context, text_mods[2], typing.cast(Tensor, context_attn))
        # 2. each stream's feed-forward, linear_out's GEMM applying the gate
        x = self.ff.gated(x, image_mods[5], modulated_norm_of(x, image_mods, 3, 4,
                                                              [self.ff.linear_in]))
        return x, self.ff_context.gated(context, text_mods[5], modulated_norm_of(
            context, text_mods, 3, 4, [self.ff_context.linear_in]))


class Flux2ParallelSelfAttention(nn.Module):
    """One fused projection to q, k, v and the SwiGLU's two halves (`to_qkv_mlp_proj`),
    attention beside the MLP, one output projection over both (`to_out`). diffusers:
    `Flux2ParallelSelfAttention`."""

    def __init__(self, dim: int, heads: int, head_dim: int, mlp_inner: int, place: Place,
                 eps: float) -> None:
        self.heads, self.head_dim, self.mlp_inner = heads, head_dim, mlp_inner
        inner = heads * head_dim
        self.to_qkv_mlp_proj = nn.Linear(dim, 3 * inner + 2 * mlp_inner, False, **place)
        self.norm_q = RMSNorm(head_dim, eps, place=place)
        self.norm_k = RMSNorm(head_dim, eps, place=place)
        self.to_out = nn.Linear(inner + mlp_inner, dim, False, **place)

    def forward(self, x: Tensor, rotary: Rope) -> Tensor:
        return self.to_out(self.joint(x, rotary))

    def joint(self, x: Tensor, rotary: Rope) -> Tensor:
        """to_out's input: [attention | SwiGLU MLP]."""
        inner = self.heads * self.head_dim
        fused = self.to_qkv_mlp_proj(x)
        q, k = _halves(fused, 0, inner)
        v = take_slice(fused, 2 * inner, 3 * inner, axis=2)
        q, k = (norm_rope(self.norm_q, q, rotary, self.heads),
                norm_rope(self.norm_k, k, rotary, self.heads))
        attn = nn.attention(q, k, v, heads=self.heads)
        mlp = swiglu(*_halves(fused, 3 * inner, self.mlp_inner))
        return concatenate([attn, mlp], axis=2)


class Flux2SingleTransformerBlock(nn.Module):
    """x + gate * attn(modulate(norm(x))) over text then image tokens. diffusers:
    `Flux2SingleTransformerBlock`."""

    def __init__(self, dim: int, heads: int, head_dim: int, mlp_inner: int, place: Place,
                 eps: float) -> None:
        self.attn = Flux2ParallelSelfAttention(dim, heads, head_dim, mlp_inner, place, eps)

    def forward(self, x: Tensor, mods: Modulation, rotary: Rope) -> Tensor:
        """mods: Flux2Modulation(sets=1)'s shift, scale, gate; the gate and residual in
        to_out's GEMM where it takes them."""
        attn = self.attn
        normed = modulated_norm_of(x, mods, 0, 1, [attn.to_qkv_mlp_proj])
        if "forward" in vars(attn) or not attn.to_out.plain():
            return gated_add(x, mods[2], attn(normed, rotary))
        return gated_linear(x, mods[2], attn.to_out, attn.joint(normed, rotary))


class Flux2TimestepGuidanceEmbeddings(nn.Module):
    """temb (B, dim): the embedded timestep, plus the embedded guidance scale where the
    model has `guidance_embedder`. diffusers: `Flux2TimestepGuidanceEmbeddings`."""

    def __init__(self, channels: int, dim: int, place: Place, *, guidance: bool) -> None:
        self.channels, self.dtype = channels, place["dtype"]
        self.timestep_embedder = TimestepEmbedding(channels, dim, place, bias=False)
        self.guidance_embedder = (TimestepEmbedding(channels, dim, place, bias=False)
                                  if guidance else None)

    def _sinusoid(self, values: Any, device: Device) -> Tensor:
        if not isinstance(values, Tensor):
            values = np.asarray(values, np.float32).reshape(-1)
        return nn.timestep_embedding(values, self.channels, flip_sin_to_cos=True,
                                     downscale_freq_shift=0, dtype=self.dtype, device=device)

    def forward(self, timestep: Any, guidance: Any, device: Device) -> Tensor:
        temb = self.timestep_embedder(self._sinusoid(timestep, device))
        if guidance is not None and self.guidance_embedder is not None:
            temb = temb + self.guidance_embedder(self._sinusoid(guidance, device))
        return temb


class Flux2Transformer2DModel(nn.Module):
    """Packed latents (B, Li, in_channels) -> the flow (B, Li, out_channels).

    Config: `transformer/config.json` of a FLUX.2 folder (diffusers' Flux2Transformer2DModel
    fields). Parameter names are diffusers' (`double_stream_modulation_img.linear.weight`,
    `single_transformer_blocks.0.attn.to_qkv_mlp_proj.weight`, ...). diffusers:
    `Flux2Transformer2DModel(hidden_states, encoder_hidden_states, timestep, img_ids,
    txt_ids, guidance).sample`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        heads, head_dim = rope_heads(cfg)
        dim, eps = heads * head_dim, cfg["eps"]
        mlp_inner = int(dim * cfg["mlp_ratio"])
        out_channels = cfg["out_channels"] or cfg["in_channels"]
        self.time_guidance_embed = Flux2TimestepGuidanceEmbeddings(
            cfg["timestep_guidance_channels"], dim, place, guidance=cfg["guidance_embeds"])
        self.double_stream_modulation_img = Flux2Modulation(dim, place, sets=2)
        self.double_stream_modulation_txt = Flux2Modulation(dim, place, sets=2)
        self.single_stream_modulation = Flux2Modulation(dim, place, sets=1)
        self.x_embedder = nn.Linear(cfg["in_channels"], dim, False, **place)
        self.context_embedder = nn.Linear(cfg["joint_attention_dim"], dim, False, **place)
        self.transformer_blocks = nn.ModuleList(
            [Flux2TransformerBlock(dim, heads, head_dim, mlp_inner, place, eps)
             for _ in range(cfg["num_layers"])])
        self.single_transformer_blocks = nn.ModuleList(
            [Flux2SingleTransformerBlock(dim, heads, head_dim, mlp_inner, place, eps)
             for _ in range(cfg["num_single_layers"])])
        self.norm_out = AdaLayerNormContinuous(dim, place, bias=False)
        self.proj_out = nn.Linear(dim, cfg["patch_size"] ** 2 * out_channels, False, **place)

    def rotary(self, txt_ids: Any, img_ids: Any) -> tuple[Tensor, Tensor]:
        """cos/sin tables for text then image positions ((Lt, 4) and (Li, 4) ids (t, h, w,
        l), as Flux2KleinPipeline builds them)."""
        ids = np.concatenate([np.asarray(txt_ids), np.asarray(img_ids)])
        return rope_tables(ids, tuple(self.config["axes_dims_rope"]),
                           float(self.config["rope_theta"]),
                           device=self.x_embedder.weight.device)

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor, timestep: Any,
                img_ids: Any, txt_ids: Any, guidance: Any = None, *,
                rotary: tuple[Tensor, Tensor] | None = None,
                cache: BranchCache | None = None) -> Tensor:
        """hidden_states (B, Li, in_channels): packed latents; encoder_hidden_states
        (B, Lt, joint_attention_dim): the text encoder's stacked hidden states; timestep (B,)
        in [0, 1] (sigmas); guidance (B,) the distilled guidance scale (ignored by a model
        without `guidance_embeds`, as diffusers does); host numbers or float32 Tensors;
        img_ids (Li, 4), txt_ids (Lt, 4) positions, or their tables precomputed once per
        picture size by `rotary` (the ids are then unused). `cache`: a step cache branch
        (`step_cache.StepCache.branch()`) the blocks run through, its calls in step order."""
        # 1. the conditioning vector and each stream's modulation, shared by all blocks
        temb = self.time_guidance_embed(
            self._thousandfold(timestep),
            None if guidance is None else self._thousandfold(guidance), hidden_states.device)
        activated = nn.silu(temb)  # one SiLU for the modulations and norm_out
        image_mods = self.double_stream_modulation_img.modulation(temb, activated)
        text_mods = self.double_stream_modulation_txt.modulation(temb, activated)
        single_mods = self.single_stream_modulation.modulation(temb, activated)
        x = self.x_embedder(hidden_states)
        context = self.context_embedder(encoder_hidden_states)
        tables = rotary if rotary is not None else self.rotary(txt_ids, img_ids)
        # 2. double-stream blocks, then one stream of text + image tokens (the first block
        # apart: a step cache decides after it whether the others run)
        blocks = list(self.transformer_blocks)
        text_length = context.shape[1]

        def head(x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
            return blocks[0](x, context, image_mods, text_mods, tables) if blocks else (x, context)

        def tail(x: Tensor, context: Tensor) -> Tensor:
            for block in blocks[1:]:
                x, context = block(x, context, image_mods, text_mods, tables)
            x = concatenate([context, x], axis=1)
            for single in self.single_transformer_blocks:
                x = single(x, single_mods, tables)
            return take_slice(x, text_length, x.shape[1], axis=1)

        x = run_blocks(cache, x, context, head, tail)
        # 3. final modulated norm and projection
        return self.proj_out(self.norm_out(x, temb, activated))

    def _thousandfold(self, values: Any) -> Any:
        """values x 1000 in the model's dtype, as diffusers scales them; a float32 Tensor (a
        replayed step's input) is scaled on the device, rounded as host numbers are (the
        embedding reads float32)."""
        dtype = self.x_embedder.weight.dtype
        if isinstance(values, Tensor):
            if values.dtype != np.float32:
                raise TypeError(f"timestep and guidance Tensors must be float32, got "
                                f"{values.dtype}")
            if dtype == np.float32:
                return values.reshape(-1) * 1000.0
            return cast(cast(values.reshape(-1), dtype) * dtype.type(1000), np.float32)
        return np.asarray(values, dtype).reshape(-1) * dtype.type(1000)
