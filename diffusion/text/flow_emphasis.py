"""The WebUI's emphasis on the flow families' text encoders (T5-XXL, and the CLIPs beside it on
FLUX.1, SD 3.5 and Chroma), as Forge applies it: `(word:1.2)`, `(word)` and `[word]` weigh
the states of their tokens.

Forge's text engines (`T5TextProcessingEngine`; `ClassicTextProcessingEngine` for CLIP) parse
the prompt (`prompts.parse_prompt_attention`), tokenize each piece on its own, run the encoder
over the tokens, multiply every token's states by its piece's weight and, with "Original"
(the WebUI's emphasis mode by default), scale each prompt's states so their mean is the mean
before the weights; "No norm" does not scale, "Ignore" drops the weights, "None" reads the
brackets as text (the generation's mode: text.emphasis_mode). CLIP's pooled output is
taken before the weights: it sees the prompt's words without the brackets.

What stays the pipelines' own (diffusers'): the sequence lengths, padding and truncation
(FLUX.1 dev's T5 512 tokens, schnell's and SD 3.5's 256, CLIP's 77; Chroma's mask, whose
tokens are the ones its mean counts), and BREAK, which has no chunk to end on these encoders
(each reads one sequence) and is dropped. So a prompt without emphasis encodes to the same
bits as before. Forge pads T5 to 256 tokens on FLUX (not at all on Chroma) and does not
truncate: its "Original" means count that padding, so weighted prompts are near Forge's, not
equal to them.

    ids = t5_ids(tokenizer, ["a (red:1.3) cube"], 512)
    states = emphasize(encoder(ids.ids), ids)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpustd import asarray

from .emphasis_mode import current_emphasis
from .prompts import BREAK, parse_prompt_attention
from .t5_tokenizer import T5Tokenizer
from .tokenizer import CLIPTokenizer

__all__ = ["WeightedIds", "clip_ids", "emphasize", "t5_ids", "weighted_pieces"]


def weighted_pieces(text: str, emphasis: str | None = None) -> list[tuple[str, float]]:
    """`text` as (piece, weight) pairs as the WebUI's emphasis mode reads it (None: the
    generation's, text.emphasis_mode), BREAK dropped; [(text, 1.0)] for a prompt without
    emphasis."""
    emphasis = current_emphasis(emphasis)
    parsed = [(text, 1.0)] if emphasis == "None" else parse_prompt_attention(text)
    kept = [(piece, 1.0 if emphasis == "Ignore" else weight)
            for piece, weight in parsed if (piece, weight) != BREAK]
    return kept or [("", 1.0)]


@dataclass(frozen=True)
class WeightedIds:
    """A batch of prompts' token ids (B, L) as an encoder reads them, each token's emphasis
    weight (1 for the special tokens and padding), the tokens' mask (1 but for padding) and
    the emphasis mode that weighs them."""

    ids: np.ndarray
    weights: np.ndarray
    mask: np.ndarray
    emphasis: str = "Original"

    @property
    def weighted(self) -> bool:
        """Whether any token weighs other than 1 (else the states stay as the encoder gave)."""
        return bool((self.weights != 1).any())


def _rows(pieces_ids: list[list[list[int]]], pieces: list[list[tuple[str, float]]], *,
          length: int, start: list[int], end: int, pad: int, emphasis: str,
          dtype: Any) -> WeightedIds:
    """Each prompt's piece ids joined, cut to `length` with `start` before and `end` after
    them, padded with `pad`."""
    ids = np.full((len(pieces), length), pad, dtype)
    weights = np.ones((len(pieces), length), np.float64)
    mask = np.zeros((len(pieces), length), np.int64)
    room = length - len(start) - 1
    for row, (tokens_of, parts) in enumerate(zip(pieces_ids, pieces)):
        tokens = [t for tokens in tokens_of for t in tokens][:room]
        weight = [w for tokens, (_, w) in zip(tokens_of, parts) for _ in tokens][:room]
        n = len(start) + len(tokens) + 1
        ids[row, :n] = [*start, *tokens, end]
        weights[row, len(start):len(start) + len(tokens)] = weight
        mask[row, :n] = 1
    return WeightedIds(ids, weights, mask, emphasis)


def t5_ids(tokenizer: T5Tokenizer, prompts: Sequence[str], max_length: int, *,
           emphasis: str | None = None) -> WeightedIds:
    """T5's ids of `prompts` (B, max_length) int64, each piece tokenized on its own (Forge's
    `tokenize_line`): the tokens, </s>, <pad>s; a longer prompt loses its last tokens, never
    the </s> (`tokenizer(prompts, max_length)`'s ids for prompts without emphasis)."""
    emphasis = current_emphasis(emphasis)
    pieces = [weighted_pieces(p, emphasis) for p in prompts]
    return _rows([tokenizer.tokenize([text for text, _ in parts]) for parts in pieces], pieces,
                 length=int(max_length), start=[], end=tokenizer.eos_id,
                 pad=int(tokenizer.pad_id or 0), emphasis=emphasis, dtype=np.int64)


def clip_ids(tokenizer: CLIPTokenizer, prompts: Sequence[str], *,
             emphasis: str | None = None) -> WeightedIds:
    """CLIP's ids of `prompts` (B, 77) int32, each piece tokenized on its own: BOS, at most 75
    tokens, EOS, the tokenizer's pad (`tokenizer(prompts)` for prompts without emphasis)."""
    emphasis = current_emphasis(emphasis)
    pieces = [weighted_pieces(p, emphasis) for p in prompts]
    return _rows([tokenizer.tokenize([text for text, _ in parts]) for parts in pieces], pieces,
                 length=tokenizer.model_max_length, start=[tokenizer.bos_token_id],
                 end=tokenizer.eos_token_id, pad=tokenizer.pad_token_id, emphasis=emphasis,
                 dtype=np.int32)


def emphasize(states: Any, ids: WeightedIds, keys: np.ndarray | None = None) -> Any:
    """The encoder's `states` (B, L, D; a Tensor or an array, as given back) of `ids` with
    their weights: each token's states times its weight, then with "Original" each prompt's
    scaled by its mean before over its mean after (the means over `keys`' positions (B, L):
    the tokens the model reads; None: all). `states` itself where no token is weighted."""
    if not ids.weighted:
        return states
    array = states if isinstance(states, np.ndarray) else states.numpy()
    z = np.asarray(array, np.float64)
    length = z.shape[1]
    weighted = z * ids.weights[:, :length, None]
    if ids.emphasis == "Original":
        read = (np.ones(z.shape[:2], bool) if keys is None
                else np.asarray(keys, bool)[:, :length])
        for row, positions in enumerate(read):
            before, after = z[row, positions].mean(), weighted[row, positions].mean()
            weighted[row] *= before / after
    out = weighted.astype(np.float32)
    if isinstance(states, np.ndarray):
        return out.astype(states.dtype)
    return asarray(out, dtype=states.dtype, device=states.device)
