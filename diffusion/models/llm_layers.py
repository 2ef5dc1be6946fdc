"""The layers of llm.LLMTextModel (transformers' names): grouped-query attention, the gated MLP
and the decoder layer, with what an architecture adds (`Architecture`: q/k norms, biases,
Gemma's zero-centred norms and the norms around each sublayer's output).

The residual stream is float32 whatever the weights' dtype (llm.py says why); every
projection and the attention run in the model's dtype from normed values.
"""

from __future__ import annotations

import math
import typing
from typing import Any, NamedTuple

import numpy as np

from gpucore import Device
from gpustd import Tensor, elementwise_kernel, empty, matmul, nn, permute, softmax, take_slice

from .layers import Place
from .transformer_ops import RMSNorm, cast, norm_rope

__all__ = ["ACTIVATIONS", "ARCHITECTURES", "DEFAULTS", "LLMMLP", "TYPE_DEFAULTS", "Architecture",
           "LLMAttention", "LLMDecoderLayer", "capped_attention", "repeat_kv", "residual"]


class Architecture(NamedTuple):
    qk_norm: bool  # an RMS norm over each head of q and k
    qkv_bias: bool | None  # biases on q, k, v (None: the config's attention_bias)
    o_bias: bool | None  # a bias on o (None: the config's attention_bias)
    head_dim_key: bool = True  # the config's head_dim applies (else hidden / heads always)
    # multimodal RoPE's axes take every third frequency (Qwen3-VL) rather than one contiguous
    # section each (Qwen2.5-VL)
    interleaved: bool = False
    # Gemma: every norm scales by 1 + weight, the embeddings are scaled by sqrt(hidden_size),
    # and each sublayer's output is normed before the residual takes it (post_attention_ and
    # post_feedforward_layernorm; pre_feedforward_layernorm before the MLP)
    gemma: bool = False
    # Gemma 2: the scaled scores soft-capped, tanh(s / cap) * cap (attn_logit_softcapping),
    # before the mask; the layers then read a causal and padding mask (B, 1, L, L) as `keep`
    softcap: bool = False
    # GLM-4: rotary pairs interleaved (x[2i], x[2i+1]) over the head's first
    # partial_rotary_factor of dimensions (the tables hold angle 0 past them), and the MLP's
    # gate and up projections fused into gate_up_proj
    glm: bool = False
    # T5Gemma 2's encoder: every token attends to every kept token, no causal mask
    causal: bool = True


# what each model_type adds (llm.LLMTextModel reads it), and the defaults a saved config.json
# leaves out
ARCHITECTURES: dict[str, Architecture] = {
    "qwen3": Architecture(True, None, None),
    "qwen2": Architecture(False, True, False),
    "mistral": Architecture(False, False, False),
    # Llama 3 (HunyuanVideo's llava-llama-3-8b language model): the config's biases
    "llama": Architecture(False, None, None),
    # Qwen2.5-VL's language model (Qwen-Image's encoder): Qwen2's layers
    "qwen2_5_vl_text": Architecture(False, True, False, head_dim_key=False),
    # Qwen3-VL's language model (Qwen-Image 2.1's encoder): Qwen3's layers
    "qwen3_vl_text": Architecture(True, None, None, interleaved=True),
    # Gemma 3's language model (LTX-2's encoder): q/k norms, the config's biases
    "gemma3_text": Architecture(True, None, None, gemma=True),
    # T5Gemma 2's encoder (Motif-Video's): Gemma 3's layers, bidirectional (models.t5gemma2)
    "t5gemma2_text": Architecture(True, None, None, gemma=True, causal=False),
    # Gemma 2 (Lumina Image 2.0's encoder): Gemma 3's layers without q/k norms, its scores
    # soft-capped (the scores' own path, llm_layers.capped_attention)
    "gemma2": Architecture(False, None, None, gemma=True, softcap=True),
    # T5Gemma's encoder (PRX's): Gemma 2's layers, bidirectional (models.t5gemma)
    "t5gemma_encoder": Architecture(False, None, None, gemma=True, softcap=True, causal=False),
    # GLM-4 (CogView4's GLM-4-9B): q/k/v biases as the config says, none on o; partial
    # interleaved rotary, a fused gate_up_proj (llm_layers.Architecture.glm)
    "glm": Architecture(False, None, False, glm=True),
    # SmolLM3 (Bria FIBO's encoder): Llama's layers, some without rotary embeddings (_roped)
    "smollm3": Architecture(False, None, None),
}
DEFAULTS: dict[str, Any] = {"rms_norm_eps": 1e-6, "rope_theta": 1_000_000.0,
                             "hidden_act": "silu"}
# Gemma3TextConfig's defaults, which a saved config.json leaves out where a value equals them
_GEMMA3_DEFAULTS: dict[str, Any] = {
    "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 256, "head_dim": 256,
    "num_key_value_heads": 4, "sliding_window": 4096, "rope_theta": 1_000_000.0,
    "rope_local_base_freq": 10_000.0, "sliding_window_pattern": 6}
# Gemma2Config's (Gemma-2-2B's config.json has no layer_types: every other layer is local)
_GEMMA2_DEFAULTS: dict[str, Any] = {
    "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 256, "head_dim": 256,
    "num_key_value_heads": 4, "sliding_window": 4096, "rope_theta": 10_000.0,
    "sliding_window_pattern": 2, "attn_logit_softcapping": 50.0}
# GlmConfig's
_GLM_DEFAULTS: dict[str, Any] = {"attention_bias": True, "head_dim": 128, "rope_theta": 10_000.0,
                                 "rms_norm_eps": 1.5625e-07}
TYPE_DEFAULTS = {"gemma3_text": _GEMMA3_DEFAULTS, "t5gemma2_text": _GEMMA3_DEFAULTS,
                  "gemma2": _GEMMA2_DEFAULTS, "t5gemma_encoder": _GEMMA2_DEFAULTS,
                  "glm": _GLM_DEFAULTS, "smollm3": {"rope_theta": 2_000_000.0}}

@elementwise_kernel
def _swiglu(gate, up):
    g = float(gate)
    return g / (1.0 + math.exp(-g)) * float(up)


@elementwise_kernel
def _swiglu_f16(gate, up):  # float16 out: the cast pass after _swiglu, the same bits
    g = float(gate)
    return np.float16(g / (1.0 + math.exp(-g)) * float(up))


@elementwise_kernel
def _geglu(gate, up):  # transformers' gelu_pytorch_tanh (the tanh form) of gate, times up
    g = float(gate)
    inner = math.sqrt(2.0 / math.pi) * (g + 0.044715 * g * g * g)
    return 0.5 * g * (1.0 + math.tanh(inner)) * float(up)


@elementwise_kernel
def _geglu_f16(gate, up):
    g = float(gate)
    inner = math.sqrt(2.0 / math.pi) * (g + 0.044715 * g * g * g)
    return np.float16(0.5 * g * (1.0 + math.tanh(inner)) * float(up))


# config hidden_act / hidden_activation -> the gated activation's kernels (float32, float16)
ACTIVATIONS = {"silu": (_swiglu, _swiglu_f16), "gelu_pytorch_tanh": (_geglu, _geglu_f16)}


@elementwise_kernel
def _residual(stream, y):  # the float32 stream plus a float16 or float32 write, one pass
    return stream + float(y)


def residual(stream: Tensor, y: Tensor) -> Tensor:
    """stream (float32) + y (float16 or float32) in float32, one pass."""
    return typing.cast(Tensor, _residual(stream, y))


@elementwise_kernel
def _broadcast(k, v, like):  # k and v repeated over like's shape (like's values unused)
    return k, v


@elementwise_kernel
def _capped(score, keep, scale, cap):  # a dropped key's score finite: no all -inf row's NaN
    s = math.tanh(float(score) * scale / cap) * cap
    return s if float(keep) > -1.0 else -1e30


def capped_attention(q: Tensor, k: Tensor, v: Tensor, keep: Tensor, heads: int, scale: float,
                     cap: float) -> Tensor:
    """softmax(tanh(q @ k^T * scale / cap) * cap + keep) @ v over (B, L, heads * D) q, k, v
    (k and v repeated to q's heads), keep (B, 1, L, L) float32 (0 kept, -inf dropped: the
    causal and padding masks together). The scores are formed (the flash kernel has no soft
    cap; a prompt's few hundred tokens make (B, H, L, L) small) and kept float32 whatever
    the dtype, as the flash kernel accumulates. transformers: Gemma 2's
    `eager_attention_forward(..., softcap=cap)`."""
    batch, length, width = q.shape
    shape = (batch, length, heads, width // heads)

    def split(x: Tensor) -> Tensor:
        return permute(cast(x, np.float32).reshape(*shape), (0, 2, 1, 3))

    scores = matmul(split(q), split(k), trans_b=True)
    probs = softmax(typing.cast(Tensor, _capped(scores, keep, scale, cap)), axis=-1)
    out = permute(matmul(probs, split(v)), (0, 2, 1, 3)).reshape(batch, length, width)
    return cast(out, q.dtype)


def repeat_kv(k: Tensor, v: Tensor, heads: int, kv_heads: int, store: dict[Device, Tensor]
              ) -> tuple[Tensor, Tensor]:
    """k and v (B, L, kv_heads*D) -> (B, L, heads*D), kv head h // group serving query head
    h: one broadcasting pass for both (a copy per group member each before); `store` keeps
    the group's shape tensor per device. transformers: `repeat_kv`."""
    group = heads // kv_heads
    if group == 1:
        return k, v
    batch, length, width = k.shape
    shape = (batch * length, kv_heads, 1, width // kv_heads)
    like = store.get(k.device)
    if like is None:  # a (1, 1, group, 1) tensor of the group's extent, made once
        like = store[k.device] = empty((1, 1, group, 1), np.uint32, device=k.device)
    repeated = typing.cast(tuple[Tensor, Tensor],
                           _broadcast(k.reshape(*shape), v.reshape(*shape), like))
    return (repeated[0].reshape(batch, length, -1), repeated[1].reshape(batch, length, -1))


class LLMAttention(nn.Module):
    """Causal grouped-query self-attention: `num_key_value_heads` k/v heads, each shared by
    heads / kv_heads query heads (transformers: `repeat_kv`); scores scaled by
    `query_pre_attn_scalar`**-0.5 where the config has it (Gemma), else head_dim**-0.5."""

    def __init__(self, cfg: dict[str, Any], place: Place, kind: Architecture) -> None:
        dim, head_dim = cfg["hidden_size"], cfg["head_dim"]
        default = bool(cfg.get("attention_bias", False))
        bias = default if kind.qkv_bias is None else kind.qkv_bias
        self.interleaved, self.causal = kind.glm, kind.causal
        self.heads, self.kv_heads, self.head_dim = (cfg["num_attention_heads"],
                                                    cfg["num_key_value_heads"], head_dim)
        scalar = cfg.get("query_pre_attn_scalar")
        self.scale = None if scalar is None else float(scalar) ** -0.5
        cap = cfg.get("attn_logit_softcapping") if kind.softcap else None
        self.softcap = float(cap) if cap else None
        self.q_proj = nn.Linear(dim, self.heads * head_dim, bias=bias, **place)
        self.k_proj = nn.Linear(dim, self.kv_heads * head_dim, bias=bias, **place)
        self.v_proj = nn.Linear(dim, self.kv_heads * head_dim, bias=bias, **place)
        self.o_proj = nn.Linear(self.heads * head_dim, dim,
                                bias=default if kind.o_bias is None else kind.o_bias, **place)
        if kind.qk_norm:
            eps = cfg["rms_norm_eps"]
            self.q_norm = RMSNorm(head_dim, eps, place=place, zero_centred=kind.gemma)
            self.k_norm = RMSNorm(head_dim, eps, place=place, zero_centred=kind.gemma)
        self._group_shape: dict[Device, Tensor] = {}

    def _repeat(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return repeat_kv(k, v, self.heads, self.kv_heads, self._group_shape)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None, keep: Tensor | None
                ) -> Tensor:
        """rotary None: a NoPE layer's attention (SmolLM3's), q and k not turned."""
        # GQA: k and v (narrower than q) in one GEMM where they can (nn.Linear.each)
        q, k, v = nn.Linear.each(x, [self.q_proj, self.k_proj, self.v_proj])
        halves = not self.interleaved
        q = norm_rope(getattr(self, "q_norm", None), q, rotary, self.heads, halves=halves)
        k = norm_rope(getattr(self, "k_norm", None), k, rotary, self.kv_heads, halves=halves)
        k, v = self._repeat(k, v)
        if self.softcap is not None:
            assert keep is not None, "soft-capped attention reads its causal mask as keep"
            scale = self.head_dim ** -0.5 if self.scale is None else self.scale
            return self.o_proj(capped_attention(q, k, v, keep, self.heads, scale, self.softcap))
        out = nn.attention(q, k, v, mask=keep, causal=self.causal, heads=self.heads,
                           scale=self.scale)
        return self.o_proj(out)


class LLMMLP(nn.Module):
    """down_proj(act(gate_proj x) * up_proj x), act silu (SwiGLU) or tanh GELU (Gemma);
    `fused`: GLM's gate_up_proj, the two in one (transformers: `GlmMLP`, gate the first
    half of its output)."""

    def __init__(self, cfg: dict[str, Any], place: Place, *, fused: bool = False) -> None:
        dim, hidden = cfg["hidden_size"], cfg["intermediate_size"]
        if fused:
            self.gate_up_proj = nn.Linear(dim, 2 * hidden, bias=False, **place)
        else:
            self.gate_proj = nn.Linear(dim, hidden, bias=False, **place)
            self.up_proj = nn.Linear(dim, hidden, bias=False, **place)
        self.down_proj = nn.Linear(hidden, dim, bias=False, **place)
        self.kernels, self.hidden = ACTIVATIONS[cfg["hidden_act"]], hidden

    def forward(self, x: Tensor) -> Tensor:
        if hasattr(self, "gate_up_proj"):
            both = self.gate_up_proj(x)
            gate = take_slice(both, 0, self.hidden, axis=-1)
            up = take_slice(both, self.hidden, 2 * self.hidden, axis=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        gated = self.kernels[1] if x.dtype == np.float16 else self.kernels[0]
        return self.down_proj(cast(typing.cast(Tensor, gated(gate, up)), x.dtype))


class LLMDecoderLayer(nn.Module):
    def __init__(self, cfg: dict[str, Any], place: Place, kind: Architecture) -> None:
        self.dtype, self.gemma = place["dtype"], kind.gemma
        eps, dim = cfg["rms_norm_eps"], cfg["hidden_size"]
        self.self_attn = LLMAttention(cfg, place, kind)
        self.mlp = LLMMLP(cfg, place, fused=kind.glm)
        self.input_layernorm = RMSNorm(dim, eps, place=place, zero_centred=kind.gemma)
        self.post_attention_layernorm = RMSNorm(dim, eps, place=place, zero_centred=kind.gemma)
        if kind.gemma:
            self.pre_feedforward_layernorm = RMSNorm(dim, eps, place=place, zero_centred=True)
            self.post_feedforward_layernorm = RMSNorm(dim, eps, place=place, zero_centred=True)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None, keep: Tensor | None
                ) -> Tensor:
        """x: the float32 residual stream (B, L, D); keep: the padding mask added to the
        scores, None for none; rotary None for a NoPE layer."""
        h = cast(self.input_layernorm(x), self.dtype)
        attended = self.self_attn(h, rotary, keep)
        if self.gemma:  # Gemma norms the output; the others norm the stream for the MLP
            x = residual(x, self.post_attention_layernorm(attended))
            h = cast(self.pre_feedforward_layernorm(x), self.dtype)
            return residual(x, self.post_feedforward_layernorm(self.mlp(h)))
        x = residual(x, attended)
        h = cast(self.post_attention_layernorm(x), self.dtype)
        return residual(x, self.mlp(h))
