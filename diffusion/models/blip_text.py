"""BLIP's text decoder: a BERT with cross-attention to the picture's tokens and a language
model head (Salesforce BLIP's `models/med.py` `BertLMHeadModel`), with its checkpoint's names
(`bert.encoder.layer.0.crossattention.self.key.weight`, `cls.predictions.decoder.weight`).

Post-norm layers: self-attention (causal), cross-attention to the image embeddings, a GELU
MLP, each added to its input and layer-normed (eps 1e-12, BERT's). Decoding keeps each layer's
keys and values (`DecoderCache`): the image's once, the text's growing by a token a step, so a
step costs one token's work. Heads are 64 wide, as in every BLIP file (BERT-base's 12 heads of
768). transformers: `BlipTextLMHeadModel`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, take

from .layers import Place

__all__ = ["HEAD_DIM", "BertLMHeadModel", "DecoderCache"]

HEAD_DIM = 64
EPS = 1e-12


@dataclass
class DecoderCache:
    """Each layer's keys and values: the image tokens' (B, N, D) for cross-attention, the text
    tokens' so far (B, T, D) for self-attention (None before the first step)."""

    image: list[tuple[Tensor, Tensor]]
    text: list[tuple[Tensor, Tensor] | None] = field(default_factory=list)
    length: int = 0  # text tokens seen

    def reorder(self, rows: np.ndarray) -> None:
        """Keep the rows (beams) `rows` of the text keys and values, in that order."""
        index = np.asarray(rows, np.int32)
        self.text = [None if kv is None else (take(kv[0], index, axis=0),
                                               take(kv[1], index, axis=0))
                     for kv in self.text]


def _output(dim_in: int, dim: int, place: Place) -> nn.Namespace:
    out = nn.Namespace()
    out.dense = nn.Linear(dim_in, dim, **place)
    out.LayerNorm = nn.LayerNorm(dim, eps=EPS, **place)
    return out


def _projections(dim: int, kv_dim: int, place: Place) -> nn.Namespace:
    projections = nn.Namespace()
    projections.query = nn.Linear(dim, dim, **place)
    projections.key = nn.Linear(kv_dim, dim, **place)
    projections.value = nn.Linear(kv_dim, dim, **place)
    return projections


class BertLayer(nn.Module):
    def __init__(self, dim: int, encoder_width: int, intermediate: int, place: Place) -> None:
        self.heads = dim // HEAD_DIM
        self.attention = nn.Namespace()
        self.attention.self = _projections(dim, dim, place)
        self.attention.output = _output(dim, dim, place)
        self.crossattention = nn.Namespace()
        self.crossattention.self = _projections(dim, encoder_width, place)
        self.crossattention.output = _output(dim, dim, place)
        self.intermediate = nn.Namespace()
        self.intermediate.dense = nn.Linear(dim, intermediate, **place)
        self.output = _output(intermediate, dim, place)

    def image_keys_values(self, image: Tensor) -> tuple[Tensor, Tensor]:
        cross = self.crossattention.self
        return cross.key(image), cross.value(image)

    def forward(self, x: Tensor, past: tuple[Tensor, Tensor] | None,
                image: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x (B, L, D) -> (B, L, D) and the text keys and values including x's."""
        own = self.attention.self
        keys, values = own.key(x), own.value(x)
        if past is not None:
            keys, values = (concatenate([past[0], keys], axis=1),
                            concatenate([past[1], values], axis=1))
        # a first call sees its tokens causally; a later one is one token after all before it
        attended = nn.attention(own.query(x), keys, values, heads=self.heads,
                                causal=past is None and x.shape[1] > 1)
        out = self.attention.output
        x = out.LayerNorm(out.dense(attended) + x)
        cross = nn.attention(self.crossattention.self.query(x), *image, heads=self.heads)
        out = self.crossattention.output
        x = out.LayerNorm(out.dense(cross) + x)
        hidden = nn.gelu(self.intermediate.dense(x))
        return self.output.LayerNorm(self.output.dense(hidden) + x), (keys, values)


class BertLMHeadModel(nn.Module):
    """Token ids and the image embeddings -> next-token logits over `vocab` (BERT's 30522
    WordPiece tokens and BLIP's [DEC] and [ENC]). Shapes: `dim` (768), `layers` (12),
    `intermediate` (3072), `positions` (512), `encoder_width` (the image encoder's: 768 for
    ViT-B, 1024 for ViT-L)."""

    def __init__(self, *, vocab: int, dim: int, layers: int, intermediate: int,
                 positions: int, encoder_width: int, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        if dim % HEAD_DIM:
            raise ValueError(f"BLIP's text decoder has heads of {HEAD_DIM}; its width {dim} "
                             "is not a multiple of that")
        place: Place = {"dtype": dtype, "device": device}
        self.bert = nn.Namespace()
        embeddings = self.bert.embeddings = nn.Namespace()
        embeddings.word_embeddings = nn.Embedding(vocab, dim, **place)
        embeddings.position_embeddings = nn.Embedding(positions, dim, **place)
        embeddings.LayerNorm = nn.LayerNorm(dim, eps=EPS, **place)
        self.bert.encoder = nn.Namespace()
        self.bert.encoder.layer = nn.ModuleList(
            [BertLayer(dim, encoder_width, intermediate, place) for _ in range(layers)])
        self.cls = nn.Namespace()
        predictions = self.cls.predictions = nn.Namespace()
        predictions.transform = nn.Namespace()
        predictions.transform.dense = nn.Linear(dim, dim, **place)
        predictions.transform.LayerNorm = nn.LayerNorm(dim, eps=EPS, **place)
        predictions.decoder = nn.Linear(dim, vocab, **place)
        self.positions = positions

    @property
    def device(self) -> Device:
        return self.bert.embeddings.word_embeddings.weight.device

    def start(self, image_embeds: Tensor, rows: int) -> DecoderCache:
        """A cache for `rows` sequences (beams) of one picture's embeddings (1, N, width)."""
        pairs = []
        for layer in self.bert.encoder.layer:
            keys, values = layer.image_keys_values(image_embeds)
            pairs.append((concatenate([keys] * rows), concatenate([values] * rows)))
        return DecoderCache(pairs, [None] * len(pairs))

    def hidden_states(self, cache: DecoderCache, ids: np.ndarray) -> Tensor:
        """The last layer's states (B, L, D) of the next tokens `ids` (B, L), which follow the
        cache's; the cache takes their keys and values."""
        ids = np.asarray(ids, np.int32)
        first, length = cache.length, ids.shape[1]
        if first and length > 1:
            raise ValueError("BLIP's decoder takes one token a step after its first call")
        if first + length > self.positions:
            raise ValueError(f"BLIP's decoder reads at most {self.positions} tokens")
        emb = self.bert.embeddings
        positions = asarray(np.arange(first, first + length, dtype=np.int32)[None],
                            device=self.device)
        x = emb.LayerNorm(emb.word_embeddings(asarray(ids, device=self.device))
                          + emb.position_embeddings(positions))
        for index, layer in enumerate(self.bert.encoder.layer):
            x, cache.text[index] = layer(x, cache.text[index], cache.image[index])
        cache.length = first + length
        return x

    def logits(self, hidden: Tensor) -> Tensor:
        """Next-token logits (..., vocab) of hidden states (..., D): the LM head."""
        head = self.cls.predictions
        x = head.transform.LayerNorm(nn.gelu(head.transform.dense(hidden)))
        return head.decoder(x)

    def step(self, cache: DecoderCache, ids: np.ndarray) -> np.ndarray:
        """The logits (B, vocab) after the tokens `ids` (B, L), float32 on the host."""
        hidden = self.hidden_states(cache, ids)
        return self.logits(hidden[:, -1]).numpy().astype(np.float32)
