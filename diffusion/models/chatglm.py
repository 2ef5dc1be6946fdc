"""ChatGLM3-6B as Kolors' text encoder (diffusers' pipelines/kolors/text_encoder.py
`ChatGLMModel`, its parameter names): the prompt's hidden states before the last layer and the
last layer's output at the last token (Kolors' pooled embedding).

A GLM-4-like decoder (llm_layers' pieces where they fit): RMSNorm, q, k and v fused in
`query_key_value` (with biases; `multi_query_group_num` k/v heads, each shared by heads /
groups query heads), rotary turning pairs (x[2i], x[2i + 1]) over the first half of each head
(base 10000, the rest passed through), a SwiGLU MLP whose gate and up are fused in
`dense_h_to_4h` (gate the first half), `dense` and `dense_4h_to_h` without biases.

The mask is ChatGLM's own: a prompt left-padded to its length (ChatGLMTokenizer pads on the
left) attends causally among its tokens and never to the padding, while each padding row
attends to every position, padding and future tokens alike (its `get_masks`); the padding's
rows are part of the hidden states Kolors' UNet reads, so they are computed as ChatGLM does.
Positions are the tokenizer's `position_ids` (0 for the padding, 0.. for the tokens).

The residual stream is float32 whatever the weights' dtype (llm.py says why); the hidden
states returned are float32.
"""

from __future__ import annotations

import typing
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, nn, take_slice

from .layers import Place
from .llm_layers import ACTIVATIONS, repeat_kv, residual
from .llm_rope import interleaved_partial
from .transformer_ops import RMSNorm, cast, norm_rope

__all__ = ["ChatGLMModel", "chatglm_mask"]


def chatglm_mask(attention_mask: np.ndarray) -> np.ndarray:
    """The (L, L) scores mask of one prompt (1 token, 0 padding), 0 kept and -inf dropped: a
    token sees the tokens up to itself, a padding row every position. diffusers:
    `ChatGLMModel.get_masks(input_ids, None, padding_mask)` (True there is dropped)."""
    valid = np.asarray(attention_mask).astype(bool)
    keep = np.tril(np.ones((valid.size,) * 2, bool)) & valid[None, :]
    keep[~valid] = True
    return np.where(keep, np.float32(0), np.float32(-np.inf))


class _SelfAttention(nn.Module):
    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        self.heads, self.head_dim = cfg["num_attention_heads"], cfg["kv_channels"]
        self.groups = (cfg["multi_query_group_num"] if cfg.get("multi_query_attention")
                       else self.heads)
        width = self.heads * self.head_dim
        bias = bool(cfg.get("add_bias_linear") or cfg.get("add_qkv_bias"))
        self.query_key_value = nn.Linear(cfg["hidden_size"],
                                         width + 2 * self.groups * self.head_dim, bias=bias,
                                         **place)
        self.dense = nn.Linear(width, cfg["hidden_size"], bias=bool(cfg.get("add_bias_linear")),
                               **place)
        self._group_shape: dict[Device, Tensor] = {}

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor], keep: Tensor) -> Tensor:
        fused = self.query_key_value(x)
        q_width, kv_width = self.heads * self.head_dim, self.groups * self.head_dim
        q = take_slice(fused, 0, q_width, axis=-1)
        k = take_slice(fused, q_width, q_width + kv_width, axis=-1)
        v = take_slice(fused, q_width + kv_width, q_width + 2 * kv_width, axis=-1)
        q = norm_rope(None, q, rotary, self.heads)
        k = norm_rope(None, k, rotary, self.groups)
        k, v = repeat_kv(k, v, self.heads, self.groups, self._group_shape)
        return self.dense(nn.attention(q, k, v, mask=keep, heads=self.heads))


class _MLP(nn.Module):
    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        dim, self.hidden = cfg["hidden_size"], cfg["ffn_hidden_size"]
        bias = bool(cfg.get("add_bias_linear"))
        self.dense_h_to_4h = nn.Linear(dim, 2 * self.hidden, bias=bias, **place)
        self.dense_4h_to_h = nn.Linear(self.hidden, dim, bias=bias, **place)

    def forward(self, x: Tensor) -> Tensor:
        both = self.dense_h_to_4h(x)
        gate = take_slice(both, 0, self.hidden, axis=-1)
        up = take_slice(both, self.hidden, 2 * self.hidden, axis=-1)
        swiglu = ACTIVATIONS["silu"][1 if x.dtype == np.float16 else 0]
        return self.dense_4h_to_h(cast(typing.cast(Tensor, swiglu(gate, up)), x.dtype))


class _GLMBlock(nn.Module):
    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        eps, dim, self.dtype = cfg["layernorm_epsilon"], cfg["hidden_size"], place["dtype"]
        self.input_layernorm = RMSNorm(dim, eps, place=place)
        self.self_attention = _SelfAttention(cfg, place)
        self.post_attention_layernorm = RMSNorm(dim, eps, place=place)
        self.mlp = _MLP(cfg, place)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor], keep: Tensor) -> Tensor:
        x = residual(x, self.self_attention(cast(self.input_layernorm(x), self.dtype), rotary,
                                            keep))
        return residual(x, self.mlp(cast(self.post_attention_layernorm(x), self.dtype)))


class ChatGLMModel(nn.Module):
    """ChatGLM3's encoder (module docstring). Config: the text_encoder folder's config.json
    (diffusers' `ChatGLMConfig`: num_layers, hidden_size, ffn_hidden_size, kv_channels,
    num_attention_heads, multi_query_group_num, padded_vocab_size, layernorm_epsilon).
    Parameter names are diffusers' (`embedding.word_embeddings.weight`,
    `encoder.layers.0.self_attention.query_key_value.weight`, ...); its `output_layer`,
    `encoder.final_layernorm` (Kolors reads nothing after it) and the rotary buffer are for
    the loader to leave out."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {"layernorm_epsilon": 1e-5, "rmsnorm": True, "post_layer_norm": True, **config}
        unsupported = [key for key, value in (
            ("rmsnorm", not cfg["rmsnorm"]), ("pre_seq_len", cfg.get("pre_seq_len")),
            ("apply_residual_connection_post_layernorm",
             cfg.get("apply_residual_connection_post_layernorm")),
            ("fp32_residual_connection", cfg.get("fp32_residual_connection"))) if value]
        if unsupported:
            raise ValueError(f"ChatGLM config {unsupported[0]}={cfg.get(unsupported[0])!r} is "
                             "not supported; this encoder implements ChatGLM3's (RMSNorm, "
                             "pre-norm residuals, no prefix tuning)")
        if cfg["num_attention_heads"] % (cfg.get("multi_query_group_num") or 1):
            raise ValueError(f"num_attention_heads {cfg['num_attention_heads']} is not a "
                             f"multiple of multi_query_group_num {cfg['multi_query_group_num']}")
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        self.embedding = nn.Namespace()
        self.embedding.word_embeddings = nn.Embedding(cfg["padded_vocab_size"],
                                                      cfg["hidden_size"], **place)
        self.encoder = nn.Namespace()
        self.encoder.layers = nn.ModuleList([_GLMBlock(cfg, place)
                                             for _ in range(cfg["num_layers"])])

    def rotary(self, positions: np.ndarray) -> tuple[Tensor, Tensor]:
        """cos/sin (L, 1, kv_channels) of `positions` (L,): angle p / 10000^(2i / r) for pair
        i of the first r = kv_channels / 2 dimensions, 0 past them. diffusers:
        `RotaryEmbedding(kv_channels // 2)(seq_length)[position_ids]`, float32."""
        dim = self.config["kv_channels"]
        turned = dim // 2
        inv_freq = (1.0 / 10000 ** (np.arange(0, turned, 2, dtype=np.float32) / turned)
                    ).astype(np.float32)
        angle = np.outer(np.asarray(positions, np.float32), inv_freq).astype(np.float32)
        table = interleaved_partial(angle, dim)
        device = self.embedding.word_embeddings.weight.device
        return (asarray(np.cos(table).reshape(-1, 1, dim), device=device),
                asarray(np.sin(table).reshape(-1, 1, dim), device=device))

    def prompt_states(self, input_ids: Any, attention_mask: Any, position_ids: Any
                      ) -> tuple[Tensor, np.ndarray]:
        """One prompt's (1, L) ids, mask (1 token, 0 padding) and positions -> the hidden
        states before the last layer (1, L, hidden_size) float32 Tensor and the last layer's
        output at the last position (1, hidden_size) float32. diffusers: `out = model(ids,
        attention_mask=, position_ids=, output_hidden_states=True)`;
        `out.hidden_states[-2]`, `out.hidden_states[-1][-1]` (its (L, B, D) layout)."""
        ids, mask, positions = (np.asarray(a) for a in (input_ids, attention_mask,
                                                        position_ids))
        if ids.ndim != 2 or ids.shape[0] != 1 or mask.shape != ids.shape or (
                positions.shape != ids.shape) or ids.dtype.kind not in "iu":
            raise ValueError(f"prompt_states reads one prompt's (1, L) integer ids, mask and "
                             f"positions; got {ids.dtype} {ids.shape}, {mask.shape}, "
                             f"{positions.shape}")
        return self._encode(ids, mask, positions)

    def _encode(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray
                ) -> tuple[Tensor, np.ndarray]:
        """prompt_states' work (the memory modes bring the encoder in around this call)."""
        device = self.embedding.word_embeddings.weight.device
        x = cast(self.embedding.word_embeddings(asarray(ids.astype(np.int32), device=device)),
                 np.float32)
        rotary = self.rotary(positions[0])
        keep = asarray(chatglm_mask(mask[0])[None, None], device=device)
        layers = list(self.encoder.layers)
        for block in layers[:-1]:
            x = block(x, rotary, keep)
        last = layers[-1](x, rotary, keep)
        return x, np.asarray(last.numpy()[:, -1], np.float32)
