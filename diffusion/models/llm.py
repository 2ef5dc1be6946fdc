"""A decoder-only LLM as a text encoder (transformers' Qwen3Model names): the prompt's hidden
states at a chosen layer, as the 2025-26 image families read prompts (Z-Image: Qwen3's
second-to-last layer).

RMSNorm, rotary position embeddings (`rope_theta`, the "default" rope type), grouped-query
attention (Qwen3: an RMS norm over each head of q and k), a SwiGLU MLP, a causal mask plus the
prompt's padding mask. The architecture table `_ARCHITECTURES` says what a `model_type` adds
(q/k norms, q/k/v biases): Qwen3, Qwen2 (biases, no norms), Qwen2.5-VL's language model
(Qwen2's, its multimodal RoPE the plain one for text alone), Qwen3-VL's (Qwen3's, its
interleaved multimodal RoPE also the plain one for text alone) and Mistral (neither). A sliding
attention window is not implemented: a prompt longer than the config's window is refused.

With float16 weights the residual stream stays float32, and so do the hidden states returned:
an LLM's residual stream carries "massive activations" (single features in the thousands,
growing over the layers) that an unnormalized middle layer hands on as they are; in float32
they cost nothing but the stream's own memory. Every projection and the attention run in the
model's dtype from the RMS-normed stream (normed values are small). On the tiny test model with
its MLP writes scaled until the stream passes 65504 (each write below it), float16 weights
keep the states to float16 error this way; a float16 stream cannot hold them at all. One
projection's output is still float16 and would overflow past 65504 on its own: whether any of
Qwen3-4B's does is for a run with its real weights to show (float32 weights avoid it).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, elementwise_kernel, empty, nn
from gpustd.gather import gather, scatter

from .layers import Place
from .transformer_ops import RMSNorm, cast, kept, norm_rope

__all__ = ["LLMTextModel"]


class _Architecture(NamedTuple):
    qk_norm: bool  # an RMS norm over each head of q and k
    qkv_bias: bool | None  # biases on q, k, v (None: the config's attention_bias)
    o_bias: bool | None  # a bias on o (None: the config's attention_bias)
    head_dim_key: bool = True  # the config's head_dim applies (else hidden / heads always)
    # multimodal RoPE's axes take every third frequency (Qwen3-VL) rather than one contiguous
    # section each (Qwen2.5-VL)
    interleaved: bool = False


_ARCHITECTURES: dict[str, _Architecture] = {
    "qwen3": _Architecture(True, None, None),
    "qwen2": _Architecture(False, True, False),
    "mistral": _Architecture(False, False, False),
    # Qwen2.5-VL's language model (Qwen-Image's encoder): Qwen2's layers
    "qwen2_5_vl_text": _Architecture(False, True, False, head_dim_key=False),
    # Qwen3-VL's language model (Qwen-Image 2.1's encoder): Qwen3's layers
    "qwen3_vl_text": _Architecture(True, None, None, interleaved=True),
}
_DEFAULTS: dict[str, Any] = {"rms_norm_eps": 1e-6, "rope_theta": 1_000_000.0,
                             "hidden_act": "silu"}


@elementwise_kernel
def _swiglu(gate, up):
    g = float(gate)
    return g / (1.0 + math.exp(-g)) * float(up)


@elementwise_kernel
def _swiglu_f16(gate, up):  # float16 out: the cast pass after _swiglu, the same bits
    g = float(gate)
    return np.float16(g / (1.0 + math.exp(-g)) * float(up))


@elementwise_kernel
def _residual(stream, y):  # the float32 stream plus a float16 or float32 write, one pass
    return stream + float(y)


@elementwise_kernel
def _broadcast(k, v, like):  # k and v repeated over like's shape (like's values unused)
    return k, v


def _rope_theta(cfg: dict[str, Any]) -> float:
    """The rotary base of a config (transformers 5 nests it in `rope_parameters`); a scaled
    rope type (YaRN, dynamic, ...) is refused."""
    params = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    kind = params.get("rope_type", params.get("type", "default"))
    # Qwen2.5-VL's and Qwen3-VL's multimodal RoPE give a text token the same position on its
    # three axes, which is the default rotation: prompts of text alone run as such
    if kind not in ("default", "mrope"):
        raise ValueError(f"rope type {kind!r} is not supported by this text encoder; it "
                         "implements the 'default' rotary embedding")
    return float(params.get("rope_theta", cfg["rope_theta"]))


class LLMAttention(nn.Module):
    """Causal grouped-query self-attention: `num_key_value_heads` k/v heads, each shared by
    heads / kv_heads query heads (transformers: `repeat_kv`)."""

    def __init__(self, cfg: dict[str, Any], place: Place, kind: _Architecture) -> None:
        dim, head_dim = cfg["hidden_size"], cfg["head_dim"]
        default = bool(cfg.get("attention_bias", False))
        bias = default if kind.qkv_bias is None else kind.qkv_bias
        self.heads, self.kv_heads, self.head_dim = (cfg["num_attention_heads"],
                                                    cfg["num_key_value_heads"], head_dim)
        self.q_proj = nn.Linear(dim, self.heads * head_dim, bias=bias, **place)
        self.k_proj = nn.Linear(dim, self.kv_heads * head_dim, bias=bias, **place)
        self.v_proj = nn.Linear(dim, self.kv_heads * head_dim, bias=bias, **place)
        self.o_proj = nn.Linear(self.heads * head_dim, dim,
                                bias=default if kind.o_bias is None else kind.o_bias, **place)
        if kind.qk_norm:
            self.q_norm = RMSNorm(head_dim, cfg["rms_norm_eps"], place=place)
            self.k_norm = RMSNorm(head_dim, cfg["rms_norm_eps"], place=place)
        self._group_shape: dict[Device, Tensor] = {}

    def _repeat(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """k and v (B, L, KVH*D) -> (B, L, H*D), kv head h // group serving query head h:
        one broadcasting pass for both (a copy per group member each before)."""
        group = self.heads // self.kv_heads
        if group == 1:
            return k, v
        batch, length, _ = k.shape
        heads = (batch * length, self.kv_heads, 1, self.head_dim)
        like = self._group_shape.get(k.device)
        if like is None:  # a (1, 1, group, 1) tensor of the group's extent, made once
            like = self._group_shape[k.device] = empty((1, 1, group, 1), np.uint32,
                                                       device=k.device)
        repeated = typing.cast(tuple[Tensor, Tensor],
                               _broadcast(k.reshape(*heads), v.reshape(*heads), like))
        return (repeated[0].reshape(batch, length, -1), repeated[1].reshape(batch, length, -1))

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor], keep: Tensor | None) -> Tensor:
        # GQA: k and v (narrower than q) in one GEMM where they can (nn.Linear.each)
        q, k, v = nn.Linear.each(x, [self.q_proj, self.k_proj, self.v_proj])
        q = norm_rope(getattr(self, "q_norm", None), q, rotary, self.heads, halves=True)
        k = norm_rope(getattr(self, "k_norm", None), k, rotary, self.kv_heads, halves=True)
        k, v = self._repeat(k, v)
        out = nn.attention(q, k, v, mask=keep, causal=True, heads=self.heads)
        return self.o_proj(out)


class LLMMLP(nn.Module):
    """down_proj(silu(gate_proj x) * up_proj x)."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        dim, hidden = cfg["hidden_size"], cfg["intermediate_size"]
        self.gate_proj = nn.Linear(dim, hidden, bias=False, **place)
        self.up_proj = nn.Linear(dim, hidden, bias=False, **place)
        self.down_proj = nn.Linear(hidden, dim, bias=False, **place)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_proj(x), self.up_proj(x)
        swiglu = _swiglu_f16 if x.dtype == np.float16 else _swiglu
        return self.down_proj(cast(typing.cast(Tensor, swiglu(gate, up)), x.dtype))


class LLMDecoderLayer(nn.Module):
    def __init__(self, cfg: dict[str, Any], place: Place, kind: _Architecture) -> None:
        self.dtype = place["dtype"]
        eps = cfg["rms_norm_eps"]
        self.self_attn = LLMAttention(cfg, place, kind)
        self.mlp = LLMMLP(cfg, place)
        self.input_layernorm = RMSNorm(cfg["hidden_size"], eps, place=place)
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], eps, place=place)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor], keep: Tensor | None
                ) -> Tensor:
        """x: the float32 residual stream (B, L, D); keep: the padding mask added to the
        scores, None for none."""
        h = cast(self.input_layernorm(x), self.dtype)
        x = typing.cast(Tensor, _residual(x, self.self_attn(h, rotary, keep)))
        h = cast(self.post_attention_layernorm(x), self.dtype)
        return typing.cast(Tensor, _residual(x, self.mlp(h)))


class LLMTextModel(nn.Module):
    """Token ids -> the hidden states of one layer, a decoder-only LLM's body.

    Config: transformers' `config.json` (`model_type` "qwen3": Qwen3-4B of Z-Image).
    Parameter names are transformers' `Qwen3Model` ones (`embed_tokens.weight`,
    `layers.0.self_attn.q_proj.weight`, `layers.0.self_attn.q_norm.weight`, `norm.weight`);
    a `Qwen3ForCausalLM` file's `model.` prefix and `lm_head` are for the loader to drop.
    transformers: `Qwen3Model(input_ids, attention_mask, output_hidden_states=True)
    .hidden_states[layer]`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        model_type = cfg.get("model_type", "qwen3")
        if model_type not in _ARCHITECTURES:
            raise ValueError(f"text encoder model_type {model_type!r} is not supported; this "
                             f"encoder implements {sorted(_ARCHITECTURES)}")
        if cfg["hidden_act"] != "silu":
            raise ValueError(f"hidden_act {cfg['hidden_act']!r} is not supported; the LLM "
                             "text encoder implements 'silu' (SwiGLU)")
        kind = _ARCHITECTURES[model_type]
        if not kind.head_dim_key or not cfg.get("head_dim"):
            cfg["head_dim"] = cfg["hidden_size"] // cfg["num_attention_heads"]
        cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
        if cfg["num_attention_heads"] % cfg["num_key_value_heads"]:
            raise ValueError(f"num_attention_heads {cfg['num_attention_heads']} is not a "
                             f"multiple of num_key_value_heads {cfg['num_key_value_heads']}")
        self.config, self.theta, self.kind = cfg, _rope_theta(cfg), kind
        self.window = cfg.get("sliding_window") if (
            model_type == "mistral" or cfg.get("use_sliding_window")) else None
        place: Place = {"dtype": dtype, "device": device}
        self.dtype = np.dtype(dtype)
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"], **place)
        self.layers = nn.ModuleList([LLMDecoderLayer(cfg, place, kind)
                                     for _ in range(cfg["num_hidden_layers"])])
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"], place=place)
        self._tables: dict[tuple[int, Device], tuple[Tensor, Tensor]] = {}

    def rotary(self, length: int, positions: np.ndarray | None = None
               ) -> tuple[Tensor, Tensor]:
        """cos/sin (L, 1, head_dim) for positions 0..L-1 in the LLMs' half layout, in float32
        as transformers' `Qwen3RotaryEmbedding` computes them. `positions` (3, L): Qwen2.5-VL's
        multimodal positions (time, row, column) instead, each axis turning its section of
        the frequencies (the config's `mrope_section`, cycled over the three axes) as
        transformers' `Qwen2_5_VLRotaryEmbedding`; Qwen3-VL's axes interleaved (frequency i
        turned by the row when i % 3 == 1 and i < 3 * section[1], by the column when i % 3
        == 2 and i < 3 * section[2], else by time), as `Qwen3VLTextRotaryEmbedding`."""
        dim = self.config["head_dim"]
        inv_freq = (np.float32(1.0) / np.float32(self.theta) ** (
            np.arange(0, dim, 2).astype(np.float32) / np.float32(dim))).astype(np.float32)
        if positions is None:
            angle = np.outer(np.arange(length, dtype=np.float32), inv_freq).astype(np.float32)
        else:
            params = self.config.get("rope_parameters") or self.config.get("rope_scaling") or {}
            sections = list(params.get("mrope_section") or ())
            if sum(sections) != dim // 2:
                raise ValueError(f"mrope_section {sections} must add up to half the head "
                                 f"dimension ({dim // 2}) for multimodal positions")
            if self.kind.interleaved:
                index = np.arange(dim // 2)
                axis = np.zeros(dim // 2, np.int64)
                for k in (1, 2):
                    axis[(index % 3 == k) & (index < 3 * sections[k])] = k
            else:
                axis = np.repeat(np.arange(len(sections)) % 3, sections)
            angles = np.asarray(positions, np.float32)[:, :, None] * inv_freq  # (3, L, D/2)
            angle = angles[axis, :, np.arange(dim // 2)].T.astype(np.float32)
        angle = np.concatenate([angle, angle], axis=1)
        device = self.embed_tokens.weight.device
        return (asarray(np.cos(angle).reshape(length, 1, dim), device=device),
                asarray(np.sin(angle).reshape(length, 1, dim), device=device))

    def multimodal_hidden_states(self, embeddings: Tensor, positions: np.ndarray, *,
                                 final_norm: bool = True, added: Sequence[Tensor] = (),
                                 at: Any = None) -> Tensor:
        """The last hidden states (1, L, hidden_size) float32 of one unpadded sequence given
        as its input embeddings (1, L, hidden_size) float32 (a picture's vision tokens in
        place of its pad tokens' embeddings) at multimodal positions (3, L). `added`: Tensors
        added to the outputs of the first len(added) layers (Qwen3-VL's deepstack features):
        (1, L, hidden_size) float32 each, zero away from the picture's tokens; or, with `at`
        the n distinct positions (integers in [0, L)) of the picture's tokens, only their rows,
        (n, hidden_size) or (1, n, hidden_size) float32 or float16, added at those positions
        alone (the other rows as the layer left them; the full tensor's zeros gave the same
        but for -0.0 + 0.0's sign). transformers: `Qwen2_5_VLModel(input_ids, pixel_values=,
        image_grid_thw=, output_hidden_states=True).hidden_states[-1]`
        (`Qwen3VLTextModel(inputs_embeds=, visual_pos_masks=, deepstack_visual_embeds=)`
        with `added`, `at` = `visual_pos_masks`' True places); `final_norm` as
        `hidden_states`'."""
        length = embeddings.shape[1]
        if embeddings.ndim != 3 or embeddings.shape[0] != 1 or np.shape(positions) != (
                3, length):
            raise ValueError(f"multimodal_hidden_states reads (1, L, D) embeddings and (3, L) "
                             f"positions, got {embeddings.shape} and {np.shape(positions)}")
        count = len(self.layers)
        index = None if at is None else self._rows_at(at, length, embeddings.device)
        shape = embeddings.shape if at is None else (1, np.size(at), embeddings.shape[2])
        if len(added) > count or any(a.shape not in (shape, shape[1:]) for a in added):
            raise ValueError(f"multimodal_hidden_states adds at most {count} tensors of shape "
                             f"{shape}, got {[a.shape for a in added]}")
        if at is not None:  # as rows (none: nothing to add)
            added = [a.reshape(*shape) for a in added] if index is not None else []
        return self._run(cast(embeddings, np.float32), self.rotary(length, positions), None,
                         [count], final_norm, added, index)[0]

    @staticmethod
    def _rows_at(at: Any, length: int, device: Device) -> Tensor | None:
        """`at` checked (distinct integers in [0, length)) as an int32 Tensor; None for none."""
        host = np.asarray(at)
        if host.ndim != 1 or host.dtype.kind not in "iu" or (host.size and (
                host.min() < 0 or host.max() >= length)) or len(np.unique(host)) != host.size:
            raise ValueError(f"`at` must be distinct integer positions in [0, {length}), got "
                             f"{host.dtype} of shape {host.shape}")
        return asarray(host.astype(np.int32), device=device) if host.size else None

    def hidden_states(self, input_ids: Any, attention_mask: Any = None, layer: int = -1, *,
                      final_norm: bool = True) -> Tensor:
        """input_ids (B, L) ints, attention_mask (B, L) (1 keep, 0 padding; None: all kept)
        -> (B, L, hidden_size) float32: the embeddings (layer 0), the output of layer k
        (layer k, unnormalized) or, for the last (-1), the final norm's output; negative
        layers count from the end as transformers' `hidden_states` tuple (num_hidden_layers
        + 1 entries). Only the layers needed run (Z-Image's -2 skips the last).
        `final_norm=False`: the last layer's output as it leaves the layer, the final norm
        not applied (Qwen-Image 2.1 reads that; transformers 5 hands the normed one as
        `hidden_states[-1]` unless a hook skips the norm, as diffusers' pipeline does)."""
        return self.hidden_states_of(input_ids, attention_mask, (layer,),
                                     final_norm=final_norm)[0]

    def hidden_states_of(self, input_ids: Any, attention_mask: Any = None,
                         layers: Sequence[int] = (-1,), *, final_norm: bool = True
                         ) -> list[Tensor]:
        """`hidden_states` of several layers from one pass, in the order asked (FLUX.2
        klein's 9, 18 and 27); the pass stops at the deepest. transformers:
        `[out.hidden_states[k] for k in layers]`."""
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise ValueError(f"input_ids must be (batch, length) integers, got {ids.dtype} "
                             f"of shape {ids.shape}")
        count = len(self.layers)
        if not layers:
            raise ValueError("hidden_states_of needs at least one layer")
        indices = [layer + count + 1 if layer < 0 else layer for layer in layers]
        for layer, index in zip(layers, indices, strict=True):
            if not 0 <= index <= count:
                raise ValueError(f"layer {layer} is out of range for {count} layers plus the "
                                 f"embeddings (use -{count + 1} .. {count})")
        if self.window and ids.shape[1] > self.window:
            raise ValueError(f"{ids.shape[1]} tokens pass this encoder's sliding attention window "
                             f"of {self.window}, which is not implemented; shorten the prompt")
        mask = np.ones(ids.shape, bool) if attention_mask is None else (
            np.asarray(attention_mask).astype(bool))
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask {mask.shape} must match input_ids {ids.shape}")
        device = self.embed_tokens.weight.device
        x = cast(self.embed_tokens(asarray(ids.astype(np.int32), device=device)), np.float32)
        rotary = self._text_rotary(ids.shape[1])
        # no padding: no mask to add (adding zeros gave the same scores)
        keep = None if mask.all() else asarray(
            np.where(mask, np.float32(0), np.float32(-np.inf))[:, None, None, :], device=device)
        return self._run(x, rotary, keep, indices, final_norm)

    def _text_rotary(self, length: int) -> tuple[Tensor, Tensor]:
        """rotary(length), made once per length and device and kept for the next prompts
        (the two uploads, each a submit, and the host's tables)."""
        return kept(self._tables, (length, self.embed_tokens.weight.device),
                    lambda: self.rotary(length))

    def _run(self, x: Tensor, rotary: tuple[Tensor, Tensor], keep: Tensor | None,
             indices: Sequence[int], final_norm: bool, added: Sequence[Tensor] = (),
             at: Tensor | None = None) -> list[Tensor]:
        """The stream after each layer in `indices` (0: the embeddings; all layers: normed
        if `final_norm`), added[k] added to layer k + 1's output: all of it, or with `at` (int32
        positions along L) its rows at those positions."""
        count = len(self.layers)
        wanted = set(indices)
        found = {0: x}
        for depth, block in enumerate(list(self.layers)[:max(indices)], start=1):
            x = block(x, rotary, keep)
            if depth <= len(added) and at is not None:  # the output is the layer's own:
                scatter(x, at, typing.cast(Tensor, _residual(  # its rows change in place
                    gather(x, at, 1), added[depth - 1])), 1)
            elif depth <= len(added):
                x = typing.cast(Tensor, _residual(x, added[depth - 1]))
            if depth in wanted:  # only the layers asked for stay in memory
                found[depth] = x
        if count in wanted:
            found[count] = cast(self.norm(x), np.float32) if final_norm else x
        return [found[index] for index in indices]
