"""A decoder-only LLM as a text encoder (transformers' Qwen3Model names): the prompt's hidden
states at a chosen layer, as the 2025-26 image families read prompts (Z-Image: Qwen3's
second-to-last layer).

RMSNorm, rotary position embeddings (`rope_theta`, the "default" rope type, "linear" or "yarn"
scaling: llm_rope.py), grouped-query attention (Qwen3: an RMS norm over each head of q and k),
a SwiGLU MLP, a causal mask plus the prompt's padding mask; the layers are in llm_layers.py.
The architecture table `ARCHITECTURES` (llm_layers) says what a `model_type` adds (q/k norms,
q/k/v biases): Qwen3, Qwen2 (biases, no norms), Qwen2.5-VL's language model (Qwen2's, its multimodal
RoPE the plain one for text alone), Qwen3-VL's (Qwen3's, its interleaved multimodal RoPE also
the plain one for text alone), Mistral (neither) and Gemma 3's language model (Qwen3's plus
Gemma's: norms scaling by 1 + weight, embeddings scaled by sqrt(hidden_size), norms on each
sublayer's output, a tanh-GELU gated MLP, scores scaled by query_pre_attn_scalar, and local
layers with their own rotary base beside global ones with linear rope scaling), and Gemma 2's
(Gemma 3's without q/k norms, its scores soft-capped, tanh(s / cap) * cap: formed in float32,
as the flash kernel has no cap). A sliding attention window is not implemented: a prompt longer
than the config's window is refused (within it, a window changes nothing).

With float16 weights the residual stream stays float32, and so do the hidden states returned:
an LLM's residual stream carries "massive activations" (single features in the thousands,
growing over the layers) that an unnormalized middle layer hands on as they are; in float32
they cost nothing but the stream's own memory. Every projection and the attention run in the
model's dtype from the RMS-normed stream (normed values are small). On the tiny test model with
its MLP writes scaled until the stream passes 65504 (each write below it), float16 weights
keep the states to float16 error this way; a float16 stream cannot hold them at all. One
projection's output is still float16 and would overflow past 65504 on its own: whether any of
Qwen3-4B's does is for a run with its real weights to show (float32 weights avoid it).

Llama ("llama": llava-llama-3-8b's language model, HunyuanVideo's encoder) is Mistral's layers
with the config's biases; its rope may carry Llama 3.1's "llama3" scaling (long wavelengths
slowed by the factor, short ones kept, those between blended). Ministral 3's Mistral
(ERNIE-Image's encoder) carries YaRN ("yarn": each frequency blended with itself slowed by the
factor along a ramp over the dimensions, cos and sin scaled by its attention factor).
GLM-4 ("glm": CogView4's GLM-4-9B) turns pairs (x[2i], x[2i+1]) over the first
partial_rotary_factor of each head (its tables' angles 0 past them) and fuses the MLP's gate
and up projections into gate_up_proj. SmolLM3 ("smollm3": Bria FIBO's encoder) is Llama's
layers, every `no_rope_layer_interval`-th one (or those `no_rope_layers` marks 0) NoPE: its q and
k not turned.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, elementwise_kernel, nn
from gpustd.gather import gather, scatter

from .layers import Place
from .llm_layers import (
    ACTIVATIONS,
    ARCHITECTURES,
    DEFAULTS,
    TYPE_DEFAULTS,
    LLMDecoderLayer,
    residual,
)
from .llm_rope import interleaved_partial, rope_parameters, rotary_dim, scaled_frequencies
from .transformer_ops import RMSNorm, cast, kept

__all__ = ["LLMTextModel"]


@elementwise_kernel
def _scaled(x, scale):  # Gemma's embeddings times sqrt(hidden_size), into the float32 stream
    return float(x) * float(scale)


def _roped(cfg: dict[str, Any]) -> list[bool]:
    """Whether each layer turns q and k by the rotary embedding: SmolLM3's `no_rope_layers`
    (1 roped, 0 NoPE), else a NoPE layer every `no_rope_layer_interval`-th (SmolLM3Config's
    default 4); every layer for the other models, whose configs have neither."""
    count, every = cfg["num_hidden_layers"], cfg.get("no_rope_layer_interval")
    flags = cfg.get("no_rope_layers") or [
        bool((i + 1) % every) if every else True for i in range(count)]
    if len(flags) < count:
        raise ValueError(f"no_rope_layers names {len(flags)} layers, the model has {count}")
    return [bool(flag) for flag in flags[:count]]


def _layer_types(cfg: dict[str, Any], gemma: bool) -> list[str]:
    """Each layer's attention type ("full_attention" or "sliding_attention"): the config's
    `layer_types`, else Gemma 3's pattern (every `sliding_window_pattern`-th layer global),
    else full attention throughout."""
    count = cfg["num_hidden_layers"]
    if cfg.get("layer_types"):
        types = list(cfg["layer_types"])[:count]
    elif gemma:
        pattern = cfg["sliding_window_pattern"]
        types = ["sliding_attention" if (i + 1) % pattern else "full_attention"
                 for i in range(count)]
    else:
        types = ["full_attention"] * count
    if len(types) != count or not set(types) <= {"full_attention", "sliding_attention"}:
        raise ValueError(f"layer_types must name full_attention or sliding_attention for each "
                         f"of the {count} layers, got {str(types)[:80]}")
    return types


class LLMTextModel(nn.Module):
    """Token ids -> the hidden states of one layer, a decoder-only LLM's body.

    Config: transformers' `config.json` (`model_type` "qwen3": Qwen3-4B of Z-Image).
    `model_type` "gemma3_text": Gemma 3's `text_config` (LTX-2's Gemma 3 12B); "gemma2":
    Gemma 2's (Lumina Image 2.0's Gemma-2-2B, read at its second-to-last layer).
    Parameter names are transformers' `Qwen3Model` ones (`embed_tokens.weight`,
    `layers.0.self_attn.q_proj.weight`, `layers.0.self_attn.q_norm.weight`, `norm.weight`);
    a `Qwen3ForCausalLM` file's `model.` prefix and `lm_head` are for the loader to drop.
    transformers: `Qwen3Model(input_ids, attention_mask, output_hidden_states=True)
    .hidden_states[layer]`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        model_type = config.get("model_type", "qwen3")
        if model_type not in ARCHITECTURES:
            raise ValueError(f"text encoder model_type {model_type!r} is not supported; this "
                             f"encoder implements {sorted(ARCHITECTURES)}")
        kind = ARCHITECTURES[model_type]
        cfg = {**DEFAULTS, **TYPE_DEFAULTS.get(model_type, {}), **config}
        if kind.gemma:  # Gemma's config names its activation hidden_activation
            cfg["hidden_act"] = cfg["hidden_activation"]
            if cfg.get("use_bidirectional_attention") or (
                    cfg.get("attn_logit_softcapping") and not kind.softcap):
                raise ValueError(f"a {model_type} with bidirectional attention "
                                 "(EmbeddingGemma's) or soft-capped scores under Gemma 3's "
                                 "model_type is not supported; this encoder implements Gemma "
                                 "3's and Gemma 2's (model_type gemma2) causal language models")
        if cfg["hidden_act"] not in ACTIVATIONS:
            raise ValueError(f"hidden_act {cfg['hidden_act']!r} is not supported; the LLM "
                             f"text encoder implements {sorted(ACTIVATIONS)}")
        if cfg.get("mlp_bias"):
            raise ValueError("mlp_bias (biases on the MLP's projections) is not supported; "
                             "this encoder implements bias-free MLPs")
        if not kind.head_dim_key or not cfg.get("head_dim"):
            cfg["head_dim"] = cfg["hidden_size"] // cfg["num_attention_heads"]
        cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
        if cfg["num_attention_heads"] % cfg["num_key_value_heads"]:
            raise ValueError(f"num_attention_heads {cfg['num_attention_heads']} is not a "
                             f"multiple of num_key_value_heads {cfg['num_key_value_heads']}")
        types = _layer_types(cfg, kind.gemma)
        # the rotary embeddings (base, scaling), and which one each layer turns by
        ropes = {kind_: rope_parameters(cfg, kind_) for kind_ in dict.fromkeys(types)}
        self.ropes = list(dict.fromkeys(ropes.values()))
        self.rope_of = [self.ropes.index(ropes[kind_]) for kind_ in types]
        self.roped = _roped({"no_rope_layer_interval": 4, **cfg} if model_type == "smollm3"
                            else cfg)
        self.config, self.theta, self.kind = cfg, self.ropes[0][0], kind
        self.window = cfg.get("sliding_window") if (
            model_type == "mistral" or cfg.get("use_sliding_window")
            or "sliding_attention" in types) else None
        place: Place = {"dtype": dtype, "device": device}
        self.dtype = np.dtype(dtype)
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"], **place)
        # transformers scales in the weights' dtype (sqrt(3840) is 61.97 in float16)
        self.embed_scale = (float(self.dtype.type(math.sqrt(cfg["hidden_size"])))
                            if kind.gemma else None)
        self.layers = nn.ModuleList([LLMDecoderLayer(cfg, place, kind)
                                     for _ in range(cfg["num_hidden_layers"])])
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"], place=place,
                            zero_centred=kind.gemma)
        self._tables: dict[tuple[int, Device], list[tuple[Tensor, Tensor]]] = {}

    def rotary(self, length: int, positions: np.ndarray | None = None, rope: int = 0
               ) -> tuple[Tensor, Tensor]:
        """cos/sin (L, 1, head_dim) for positions 0..L-1 in the LLMs' half layout, in float32
        as transformers' `Qwen3RotaryEmbedding` computes them; `rope`: which of the model's
        rotary embeddings (`ropes`, Gemma's local and global ones), its frequencies scaled
        as its config says (linear, "llama3" or "yarn": llm_rope). `positions` (3, L):
        Qwen2.5-VL's multimodal positions (time, row, column) instead, each axis turning its
        section of the frequencies (the config's `mrope_section`, cycled over the three axes) as
        transformers' `Qwen2_5_VLRotaryEmbedding`; Qwen3-VL's axes interleaved (frequency i
        turned by the row when i % 3 == 1 and i < 3 * section[1], by the column when i % 3
        == 2 and i < 3 * section[2], else by time), as `Qwen3VLTextRotaryEmbedding`."""
        dim = self.config["head_dim"]
        theta, scaling = self.ropes[rope]
        turned = rotary_dim(self.config) if self.kind.glm else dim
        inv_freq = scaled_frequencies(theta, turned, scaling)
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
        angle = (interleaved_partial(angle, dim) if self.kind.glm
                 else np.concatenate([angle, angle], axis=1))
        device = self.embed_tokens.weight.device
        gain = np.float32(scaling.attention)  # YaRN's attention factor (1 for the others)
        return (asarray((np.cos(angle) * gain).reshape(length, 1, dim), device=device),
                asarray((np.sin(angle) * gain).reshape(length, 1, dim), device=device))

    def multimodal_hidden_states(self, embeddings: Tensor, positions: np.ndarray, *,
                                 final_norm: bool = True, added: Sequence[Tensor] = (),
                                 at: Any = None, attention_mask: Any = None) -> Tensor:
        """`multimodal_hidden_states_of` the last layer."""
        return self.multimodal_hidden_states_of(
            embeddings, positions, (len(self.layers),), final_norm=final_norm, added=added,
            at=at, attention_mask=attention_mask)[0]

    def multimodal_hidden_states_of(self, embeddings: Tensor, positions: np.ndarray,
                                    layers: Sequence[int], *, final_norm: bool = True,
                                    added: Sequence[Tensor] = (), at: Any = None,
                                    attention_mask: Any = None) -> list[Tensor]:
        """The hidden states (1, L, hidden_size) float32 after `layers` of one sequence given as its
        input embeddings (1, L, hidden_size) float32 (a picture's vision tokens in place of
        its pad tokens' embeddings) at multimodal positions (3, L). `added`: Tensors
        added to the outputs of the first len(added) layers (Qwen3-VL's deepstack features):
        (1, L, hidden_size) float32 each, zero away from the picture's tokens; or, with `at`
        the n distinct positions (integers in [0, L)) of the picture's tokens, only their rows,
        (n, hidden_size) or (1, n, hidden_size) float32 or float16, added at those positions
        alone (the other rows as the layer left them; the full tensor's zeros gave the same
        but for -0.0 + 0.0's sign). transformers: `Qwen2_5_VLModel(input_ids, pixel_values=,
        image_grid_thw=, output_hidden_states=True).hidden_states[-1]`
        (`Qwen3VLTextModel(inputs_embeds=, visual_pos_masks=, deepstack_visual_embeds=)`
        with `added`, `at` = `visual_pos_masks`' True places); `final_norm` as
        `hidden_states`'; `attention_mask` (1, L): the keys attended to (1), padding (0) left
        out of every token's attention, as `hidden_states`' (LongCat-Image-Edit's prompt)."""
        length = embeddings.shape[1]
        count = len(self.layers)
        if embeddings.ndim != 3 or embeddings.shape[0] != 1 or np.shape(positions) != (
                3, length) or not layers or not all(0 < k <= count for k in layers):
            raise ValueError(f"multimodal_hidden_states reads (1, L, D), (3, L) positions, layers"
                             f" 1..{count}; got {embeddings.shape} {np.shape(positions)} {layers}")
        index = None if at is None else self._rows_at(at, length, embeddings.device)
        shape = embeddings.shape if at is None else (1, np.size(at), embeddings.shape[2])
        if len(added) > count or any(a.shape not in (shape, shape[1:]) for a in added):
            raise ValueError(f"multimodal_hidden_states adds at most {count} tensors of shape "
                             f"{shape}, got {[a.shape for a in added]}")
        if at is not None:  # as rows (none: nothing to add)
            added = [a.reshape(*shape) for a in added] if index is not None else []
        keep = (np.ones((1, length), bool) if attention_mask is None
                else np.asarray(attention_mask).astype(bool))
        if keep.shape != (1, length):
            raise ValueError(f"attention_mask must be (1, {length}), got {keep.shape}")
        return self._run(cast(embeddings, np.float32), [self.rotary(length, positions)],
                         self._keep(keep, embeddings.device), list(layers), final_norm, added,
                         index)

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
        x = self.embed_tokens(asarray(ids.astype(np.int32), device=device))
        x = cast(x, np.float32) if self.embed_scale is None else typing.cast(
            Tensor, _scaled(x, self.embed_scale))
        rotary = self._text_rotary(ids.shape[1])
        return self._run(x, rotary, self._keep(mask, device), indices, final_norm)

    def embedded_hidden_states(self, embeddings: Tensor, attention_mask: Any, layer: int
                               ) -> Tensor:
        """`hidden_states` (layer > 0 or negative) of input embeddings (B, L, hidden_size)
        float32 given in place of the ids' (LLaVA's picture features among them), plain
        positions. transformers: `model(inputs_embeds=, attention_mask=,
        output_hidden_states=True).hidden_states[layer]`."""
        index = layer + len(self.layers) + 1 if layer < 0 else layer
        mask = np.asarray(attention_mask).astype(bool)
        if embeddings.ndim != 3 or mask.shape != embeddings.shape[:2] or not 0 < index <= len(
                self.layers):
            raise ValueError(f"embedded_hidden_states reads (B, L, D) embeddings with a (B, L) "
                             f"mask and a layer past the embeddings, got {embeddings.shape}, "
                             f"{mask.shape} and {layer}")
        return self._run(cast(embeddings, np.float32), self._text_rotary(mask.shape[1]),
                         self._keep(mask, embeddings.device), [index], True)[0]

    def _keep(self, mask: np.ndarray, device: Device) -> Tensor | None:
        """The padding mask (B, L) as the layers add it: (B, 1, 1, L) 0 / -inf, None for no
        padding (adding zeros gave the same scores); soft-capped scores (Gemma 2) read the
        causal mask in it too, (B, 1, L, L)."""
        if self.kind.softcap:  # a bidirectional encoder (T5Gemma's, t5gemma.py) keeps all
            causal = np.tril(np.ones((mask.shape[1],) * 2, bool),
                             0 if self.kind.causal else mask.size)
            both = causal[None, None] & mask[:, None, None, :]
            return asarray(np.where(both, np.float32(0), np.float32(-np.inf)), device=device)
        return None if mask.all() else asarray(
            np.where(mask, np.float32(0), np.float32(-np.inf))[:, None, None, :], device=device)

    def _text_rotary(self, length: int) -> list[tuple[Tensor, Tensor]]:
        """rotary(length) of each of `ropes`, made once per length and device and kept for
        the next prompts (the two uploads, each a submit, and the host's tables)."""
        return kept(self._tables, (length, self.embed_tokens.weight.device),
                    lambda: [self.rotary(length, rope=k) for k in range(len(self.ropes))])

    def _run(self, x: Tensor, rotary: list[tuple[Tensor, Tensor]], keep: Tensor | None,
             indices: Sequence[int], final_norm: bool, added: Sequence[Tensor] = (),
             at: Tensor | None = None) -> list[Tensor]:
        """The stream after each layer in `indices` (0: the embeddings; all layers: normed
        if `final_norm`), each layer turned by its pair of `rotary` (rope_of), added[k]
        added to layer k + 1's output: all of it, or with `at` (int32 positions along L) its
        rows at those positions."""
        count = len(self.layers)
        wanted = set(indices)
        found = {0: x}
        for depth, block in enumerate(list(self.layers)[:max(indices)], start=1):
            x = block(x, rotary[self.rope_of[depth - 1]] if self.roped[depth - 1] else None,
                      keep)
            if depth <= len(added) and at is not None:  # the output is the layer's own:
                scatter(x, at, residual(gather(x, at, 1), added[depth - 1]), 1)  # in place
            elif depth <= len(added):
                x = residual(x, added[depth - 1])
            if depth in wanted:  # only the layers asked for stay in memory
                found[depth] = x
        if count in wanted:
            found[count] = cast(self.norm(x), np.float32) if final_norm else x
        return [found[index] for index in indices]
