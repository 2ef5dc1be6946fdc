"""CLIP text encoders (transformers' CLIPTextModel / CLIPTextModelWithProjection names): SD1
ViT-L/14, SD2 OpenCLIP ViT-H, SDXL's ViT-L + OpenCLIP ViT-bigG (with its text projection)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, take_slice, where

from .layers import Place

# (tokens, *, clip_skip, final_norm, pooled) -> (hidden, last layer or None): encode_tokens
EncodeTokens = Callable[..., tuple[Tensor, Tensor | None]]

_DEFAULTS: dict[str, Any] = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072,
    "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77,
    "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "eos_token_id": 49407,
}
# transformers pools at argmax(ids) when a config has this eos_token_id (every CLIP config
# written before its PR #24773, SD's and SDXL's included), else at the first eos_token_id
_LEGACY_EOS = 2
_ACTIVATIONS = {"quick_gelu": nn.quick_gelu, "gelu": nn.gelu}


class CLIPAttention(nn.Module):
    def __init__(self, dim: int, heads: int, place: Place, *, causal: bool = True) -> None:
        self.heads = heads
        self.causal = causal  # the text model's; the vision model's sees every patch
        self.q_proj = nn.Linear(dim, dim, **place)
        self.k_proj = nn.Linear(dim, dim, **place)
        self.v_proj = nn.Linear(dim, dim, **place)
        self.out_proj = nn.Linear(dim, dim, **place)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = nn.Linear.each(x, [self.q_proj, self.k_proj, self.v_proj])  # one GEMM
        out = nn.attention(q, k, v, causal=self.causal, heads=self.heads)
        return self.out_proj(out)


class CLIPMLP(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str, place: Place) -> None:
        if act not in _ACTIVATIONS:
            raise ValueError(f"CLIP hidden_act {act!r} is not supported; use one of "
                             f"{sorted(_ACTIVATIONS)}")
        self.act = act
        self.fc1 = nn.Linear(dim, hidden, **place)
        self.fc2 = nn.Linear(hidden, dim, **place)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(_ACTIVATIONS[self.act](self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, cfg: dict[str, Any], place: Place, *, causal: bool = True) -> None:
        dim, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
        self.layer_norm1 = nn.LayerNorm(dim, eps=eps, **place)
        self.self_attn = CLIPAttention(dim, cfg["num_attention_heads"], place, causal=causal)
        self.layer_norm2 = nn.LayerNorm(dim, eps=eps, **place)
        self.mlp = CLIPMLP(dim, cfg["intermediate_size"], cfg["hidden_act"], place)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPTextModel(nn.Module):
    """Token ids (B, L) -> hidden states (B, L, hidden), and the pooled text embedding.
    Config: `text_encoder/config.json` (transformers' CLIPTextConfig fields).

    Parameter names are transformers' without its `text_model.` prefix (as the loaders give
    them: `embeddings.token_embedding.weight`, `encoder.layers.0.self_attn.q_proj.weight`).
    A config whose `architectures` names "CLIPTextModelWithProjection" (SDXL's OpenCLIP
    bigG, `text_encoder_2`) also has `text_projection.weight` (projection_dim, hidden), a Linear
    without bias applied to the pooled output; `with_projection` overrides the config.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None, with_projection: bool | None = None) -> None:
        place: Place = {"dtype": dtype, "device": device}
        cfg = {**_DEFAULTS, **config}
        self.config = cfg
        dim = cfg["hidden_size"]
        self.embeddings = nn.Namespace()
        self.embeddings.token_embedding = nn.Embedding(cfg["vocab_size"], dim, **place)
        self.embeddings.position_embedding = nn.Embedding(cfg["max_position_embeddings"], dim,
                                                          **place)
        self.encoder = nn.Namespace()
        self.encoder.layers = nn.ModuleList(
            [CLIPEncoderLayer(cfg, place) for _ in range(cfg["num_hidden_layers"])])
        self.final_layer_norm = nn.LayerNorm(dim, eps=cfg["layer_norm_eps"], **place)
        if with_projection is None:
            with_projection = "CLIPTextModelWithProjection" in (cfg.get("architectures") or ())
        self.has_projection = with_projection
        if with_projection:
            if not cfg.get("projection_dim"):
                raise ValueError("a CLIP text model with projection needs projection_dim in its "
                                 "config")
            self.text_projection = nn.Linear(dim, cfg["projection_dim"], bias=False, **place)

    def forward(self, input_ids: Any, *, clip_skip: int = 0,
                embeddings: Sequence[Sequence[tuple[int, Any]]] | None = None,
                final_norm: bool = True, encode_tokens: EncodeTokens | None = None) -> Tensor:
        """input_ids: (B, L) ints -> (B, L, hidden). `clip_skip=k` stops k layers early
        (WebUI's "Clip skip" minus one, diffusers' `clip_skip`). `final_norm` applies the final
        layer norm to those states (SD 1/2); False returns them as the layer left them, which
        with clip_skip=1 is transformers' `hidden_states[-2]`, SDXL's conditioning.

        `embeddings` (textual inversion): per batch row a list of (position, vectors (n, D));
        the vectors replace the token embeddings at positions position .. position + n - 1,
        before the position embeddings are added (the WebUI's `EmbeddingsWithFixes`; vectors
        past the last position are dropped, as there). transformers: `inputs_embeds` built
        from the token embeddings with those rows replaced.

        `encode_tokens` runs the transformer in place of `self.encode_tokens` (a capture of it:
        the token lookup and the textual-inversion rows stay outside, host work per prompt).
        """
        return self._encode(input_ids, clip_skip, embeddings, final_norm, pooled=False,
                            encode_tokens=encode_tokens)[0]

    def forward_pooled(self, input_ids: Any, *, clip_skip: int = 0,
                       embeddings: Sequence[Sequence[tuple[int, Any]]] | None = None,
                       final_norm: bool = True, encode_tokens: EncodeTokens | None = None
                       ) -> tuple[Tensor, Tensor]:
        """(hidden, pooled): `hidden` exactly as `forward` returns it, and `pooled` (B, P) as
        transformers computes it whatever `clip_skip`/`final_norm` are: the LAST layer's
        output, final-layer-normed, at each row's end-of-text position (argmax of the ids for
        configs with the legacy eos_token_id 2, else the first eos_token_id), then multiplied
        by `text_projection` when the model has one (P = projection_dim; else P = hidden).
        transformers: `CLIPTextModelWithProjection(ids).text_embeds` (or `.pooler_output` of
        CLIPTextModel); SDXL's pooled prompt embedding. `encode_tokens`: as in `forward`.
        """
        hidden, pooled = self._encode(input_ids, clip_skip, embeddings, final_norm, pooled=True,
                                      encode_tokens=encode_tokens)
        assert pooled is not None
        return hidden, pooled

    def encode_tokens(self, tokens: Tensor, *, clip_skip: int = 0, final_norm: bool = True,
                      pooled: bool = False) -> tuple[Tensor, Tensor | None]:
        """The transformer over token embeddings `tokens` (B, L, hidden) (the token table's
        rows, textual-inversion vectors put in): position embeddings added, the layers, the
        final layer norm. (hidden as `forward` returns it, and with `pooled` the last layer's
        final-normed states (B, L, hidden) that `forward_pooled` picks from, else None.)
        Device work only, no read-back: what a pipeline captures (gpustd.capture)."""
        layers = list(self.encoder.layers)
        if not 0 <= clip_skip < len(layers):
            raise ValueError(f"clip_skip must be in 0..{len(layers) - 1}, got {clip_skip}")
        batch, length, _ = tokens.shape
        positions = np.broadcast_to(np.arange(length, dtype=np.int32), (batch, length))
        x = tokens + self.embeddings.position_embedding(asarray(positions, device=tokens.device))
        stop = len(layers) - clip_skip
        for layer in layers[:stop]:
            x = layer(x)
        hidden = self.final_layer_norm(x) if final_norm else x
        if not pooled:
            return hidden, None
        for layer in layers[stop:]:  # the pooled output is always the last layer's
            x = layer(x)
        last = hidden if stop == len(layers) and final_norm else self.final_layer_norm(x)
        return hidden, last

    def _encode(self, input_ids: Any, clip_skip: int,
                embeddings: Sequence[Sequence[tuple[int, Any]]] | None, final_norm: bool, *,
                pooled: bool, encode_tokens: EncodeTokens | None = None
                ) -> tuple[Tensor, Tensor | None]:
        ids = np.asarray(input_ids, np.int32)
        if ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, length), got shape {ids.shape}")
        batch, length = ids.shape
        if length > self.config["max_position_embeddings"]:
            raise ValueError(f"{length} tokens exceed the {self.config['max_position_embeddings']}"
                             " positions of this text encoder; truncate first")
        norm_weight = self.final_layer_norm.weight
        assert norm_weight is not None  # built affine (elementwise_affine=True)
        device = norm_weight.device
        tokens = self.embeddings.token_embedding(asarray(ids, device=device))
        if embeddings is not None:
            tokens = self._replace_rows(tokens, embeddings)
        hidden, last = (encode_tokens or self.encode_tokens)(
            tokens, clip_skip=clip_skip, final_norm=final_norm, pooled=pooled)
        if last is None:
            return hidden, None
        rows = last.reshape(batch * length, last.shape[-1])
        picked = concatenate([take_slice(rows, b * length + int(p), b * length + int(p) + 1)
                              for b, p in enumerate(self._eos_positions(ids))])
        return hidden, self.text_projection(picked) if self.has_projection else picked

    def _eos_positions(self, ids: np.ndarray) -> np.ndarray:
        """Per row, where transformers pools (see forward_pooled)."""
        eos = self.config["eos_token_id"]
        if eos == _LEGACY_EOS:
            return np.argmax(ids, axis=-1)
        return np.argmax(ids == eos, axis=-1)  # no EOS in a row: position 0, as transformers

    def _replace_rows(self, tokens: Tensor,
                      embeddings: Sequence[Sequence[tuple[int, Any]]]) -> Tensor:
        """`tokens` (B, L, D) with the textual-inversion vectors put in, on the device: one
        upload of the replacement rows and a select, no read-back."""
        batch, length, dim = tokens.shape
        if len(embeddings) != batch:
            raise ValueError(f"embeddings must have one list per batch row ({batch}), got "
                             f"{len(embeddings)}")
        if not any(embeddings):
            return tokens
        rows = np.zeros((batch, length, dim), np.float32)
        replaced = np.zeros((batch, length, 1), np.uint32)
        for row, fixes in enumerate(embeddings):
            for position, vectors in fixes:
                vectors = np.asarray(vectors, np.float32)
                if vectors.ndim != 2 or vectors.shape[1] != dim:
                    raise ValueError(f"embedding vectors must be (n, {dim}) for this text "
                                     f"encoder, got shape {vectors.shape} in row {row}")
                if not 0 <= position < length:
                    raise ValueError(f"embedding position {position} is outside the {length} "
                                     f"tokens of row {row}")
                count = min(len(vectors), length - position)
                rows[row, position:position + count] = vectors[:count]
                replaced[row, position:position + count] = 1
        return where(replaced, asarray(rows, dtype=tokens.dtype, device=tokens.device), tokens)
