"""Weighted, chunked text conditioning as the WebUI computes it (prompts of any length).

AUTOMATIC1111's `sd_hijack_clip.FrozenCLIPEmbedderWithCustomWordsBase`, on our tokenizer and
text encoder:

1. The prompt's (text, weight) pieces (`prompts.parse_prompt_attention`) are tokenized one by
   one and laid into chunks of 75 tokens. A chunk that overflows breaks after its last comma
   when that comma is within `comma_padding_backtrack` (20) tokens of the end; `BREAK` ends a
   chunk; an empty prompt is one chunk.
2. Each chunk is BOS + 75 tokens (EOS-padded) + EOS. Where the pad token is not EOS (SD 2.x),
   everything after the first EOS becomes the pad token.
3. Each chunk goes through the text encoder (`clip_skip` honoured); emphasis multiplies the
   hidden states by the token weights, then rescales so the mean is what it was before.
4. The chunks are concatenated along the sequence axis: (77 * chunks, hidden).

`encode` does this for every distinct text of each prompt part's editing schedule and returns
a `ConditioningSchedule` answering `at(step)`.

SDXL hook: an SDXL model runs steps 1-3 once per text encoder (CLIP-L and OpenCLIP-G, each
with its own tokenizer: the same BPE, so the same chunks, but its own pad token),
concatenates the two hidden states along the feature axis, and takes the pooled output of the
second encoder's first chunk (the WebUI's `zs[0].pooled`). `encode_texts` is the unit to call
per encoder.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from gpustd import Tensor, asarray

from .emphasis_mode import EMPHASIS_MODES, current_emphasis
from .prompt_editing import entry_index
from .prompts import BREAK, Prompt, parse_prompt, parse_prompt_attention
from .tokenizer import CLIPTokenizer

__all__ = [
    "CHUNK_LENGTH", "EMPHASIS_MODES", "ConditioningSchedule", "EmbeddingLookup", "PromptChunk",
    "TextEncoder", "encode", "encode_texts", "prompt_chunks",
]

CHUNK_LENGTH = 75  # prompt tokens per chunk; with BOS and EOS the encoder's 77 positions


class TextEncoder(Protocol):
    """What `encode` needs of a text encoder: ids (B, 77) -> hidden states (B, 77, D).

    Only when a prompt uses textual-inversion embeddings it is also given `embeddings`: per
    row, [(position, vectors (n, D))] whose vectors replace the token embeddings at positions
    position .. position + n - 1 (the WebUI's `EmbeddingsWithFixes`)."""

    def __call__(self, input_ids: Any, *, clip_skip: int = 0) -> Tensor: ...


class EmbeddingLookup(Protocol):
    """Finds textual-inversion embeddings by name in token ids (the WebUI's
    `EmbeddingDatabase.find_embedding_at_position`)."""

    def find(self, tokens: Sequence[int], position: int) -> tuple[Any, int] | None:
        """(embedding, tokens its name spans) if an embedding's name starts at `position`;
        the embedding's `vectors` (n, D) then take n positions in the chunk."""


@dataclass(frozen=True)
class PromptChunk:
    """77 token ids as the encoder sees them and the emphasis weight of each (1.0 for BOS, EOS
    and padding)."""

    tokens: tuple[int, ...]
    weights: tuple[float, ...]
    embeddings: tuple[tuple[int, Any], ...] = ()  # (position in the 77, embedding)

    def describe(self, tokenizer: CLIPTokenizer) -> list[tuple[str, float]]:
        """(token text, weight) of each prompt token (special tokens left out), to debug."""
        special = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
        return [(tokenizer.decode([t]) or repr(t), w) for t, w in zip(self.tokens, self.weights)
                if t not in special]


def _pieces(text: str, emphasis: str) -> list[tuple[str, float]]:
    """The WebUI parses emphasis unless the setting is "None" (brackets then are text)."""
    return [(text, 1.0)] if emphasis == "None" else parse_prompt_attention(text)


class _ChunkBuilder:
    """The WebUI's `tokenize_line`: tokens in, 77-token chunks out."""

    def __init__(self, tokenizer: CLIPTokenizer, comma_padding_backtrack: int) -> None:
        self.tokenizer = tokenizer
        self.comma = tokenizer.token_id(",</w>")
        self.backtrack = comma_padding_backtrack
        self.chunks: list[PromptChunk] = []
        self.tokens: list[int] = []
        self.weights: list[float] = []
        self.embeddings: list[tuple[int, Any]] = []  # (position in self.tokens, embedding)
        self.last_comma = -1

    def finish_chunk(self) -> None:
        """Pad the open chunk to 75 with EOS, wrap it in BOS ... EOS, start a new one."""
        bos, eos, pad = (self.tokenizer.bos_token_id, self.tokenizer.eos_token_id,
                         self.tokenizer.pad_token_id)
        fill = CHUNK_LENGTH - len(self.tokens)
        tokens = [bos, *self.tokens, *[eos] * fill, eos]
        if pad != eos:  # SD 2: what follows the first EOS is padding
            first_eos = tokens.index(eos)
            tokens[first_eos + 1:] = [pad] * (len(tokens) - first_eos - 1)
        self.chunks.append(PromptChunk(tuple(tokens), (1.0, *self.weights, *[1.0] * fill, 1.0),
                                       tuple((at + 1, e) for at, e in self.embeddings)))
        self.tokens, self.weights, self.embeddings, self.last_comma = [], [], [], -1

    def make_room(self, token: int) -> None:
        """Before `token` goes in: remember a comma, or start a new chunk if this one is full."""
        if token == self.comma:
            self.last_comma = len(self.tokens)
        elif (self.backtrack and len(self.tokens) == CHUNK_LENGTH and self.last_comma != -1
              and len(self.tokens) - self.last_comma <= self.backtrack):
            # full, and a comma close by: what follows the comma moves to the next chunk
            # (embeddings move with their placeholders; the WebUI leaves them behind)
            cut = self.last_comma + 1
            moved = (self.tokens[cut:], self.weights[cut:],
                     [(at - cut, e) for at, e in self.embeddings if at >= cut])
            self.embeddings = [(at, e) for at, e in self.embeddings if at < cut]
            self.tokens, self.weights = self.tokens[:cut], self.weights[:cut]
            self.finish_chunk()
            self.tokens, self.weights, self.embeddings = moved
        if len(self.tokens) == CHUNK_LENGTH:
            self.finish_chunk()

    def add(self, token: int, weight: float) -> None:
        self.tokens.append(token)
        self.weights.append(weight)

    def add_embedding(self, embedding: Any, weight: float) -> None:
        """Placeholders (id 0) for the embedding's vectors, all in one chunk."""
        count = len(embedding.vectors)
        if len(self.tokens) + count > CHUNK_LENGTH:
            self.finish_chunk()
        self.embeddings.append((len(self.tokens), embedding))
        self.tokens += [0] * count
        self.weights += [weight] * count


def prompt_chunks(tokenizer: CLIPTokenizer, text: str, *, emphasis: str | None = None,
                  comma_padding_backtrack: int = 20,
                  embeddings: EmbeddingLookup | None = None) -> list[PromptChunk]:
    """The 77-token chunks of one prompt text (no editing syntax: one scheduled text).

    `comma_padding_backtrack` is the WebUI's setting of that name (0 turns it off). BREAK ends
    a chunk (an empty one too, as in the WebUI: `BREAK x` is an empty chunk, then x).
    Embedding names that `embeddings` finds become placeholders for their vectors.
    """
    emphasis = current_emphasis(emphasis)
    if not isinstance(comma_padding_backtrack, int) or not 0 <= comma_padding_backtrack < 75:
        raise ValueError(f"comma_padding_backtrack must be an int in 0..74, got "
                         f"{comma_padding_backtrack!r}")
    pieces = _pieces(text, emphasis)
    builder = _ChunkBuilder(tokenizer, comma_padding_backtrack)
    for ids, (piece, weight) in zip(tokenizer.tokenize([p for p, _ in pieces]), pieces):
        if (piece, weight) == BREAK:
            builder.finish_chunk()
            continue
        position = 0
        while position < len(ids):
            builder.make_room(ids[position])
            found = embeddings.find(ids, position) if embeddings is not None else None
            if found is None:
                builder.add(ids[position], weight)
                position += 1
            else:
                builder.add_embedding(found[0], weight)
                position += found[1]
    if builder.tokens or not builder.chunks:
        builder.finish_chunk()
    return builder.chunks


def _apply_emphasis(z: np.ndarray, weights: np.ndarray, counts: np.ndarray,
                    emphasis: str) -> np.ndarray:
    """z (rows, 77, D) times the token weights (rows, 77); "Original" then rescales by
    old mean / new mean. The means are over the whole batch the WebUI encodes at once (every
    entry of a prompt's schedule), so a row counts as often as its text is scheduled."""
    if emphasis in ("Ignore", "None"):
        return z
    z64 = z.astype(np.float64)
    weighted = z64 * weights[:, :, None]
    if emphasis == "Original":
        row_share = counts / counts.sum()
        old_mean = float(row_share @ z64.mean(axis=(1, 2)))
        new_mean = float(row_share @ weighted.mean(axis=(1, 2)))
        weighted *= old_mean / new_mean
    return weighted.astype(np.float32)


def encode_texts(tokenizer: CLIPTokenizer, text_encoder: TextEncoder, texts: Sequence[str], *,
                 clip_skip: int = 0, emphasis: str | None = None,
                 comma_padding_backtrack: int = 20,
                 embeddings: EmbeddingLookup | None = None) -> list[np.ndarray]:
    """(77 * k, D) float32 hidden states of each text, as the WebUI's `forward(texts)`.

    The texts are encoded as one batch: each gets as many chunks as the longest (the short
    ones padded with empty chunks: BOS, then EOS/pad), and emphasis is normalised over the
    batch. Pass each text as often as it is used (a prompt's schedule entries) to get the
    WebUI's means; each distinct text is encoded once.
    """
    return _encode_batch(tokenizer, text_encoder, texts, clip_skip,
                         emphasis=current_emphasis(emphasis),
                         comma_padding_backtrack=comma_padding_backtrack,
                         embeddings=embeddings)[0]


def _encode_batch(tokenizer: CLIPTokenizer, text_encoder: TextEncoder, texts: Sequence[str],
                  clip_skip: int, **chunking: Any) -> tuple[list[np.ndarray], Tensor]:
    """`encode_texts`, and the encoder's raw output (which says its device and dtype)."""
    counts = Counter(texts)
    distinct = list(counts)
    if not distinct:
        raise ValueError("texts is empty; give at least one prompt (the empty prompt is '')")
    chunks = [prompt_chunks(tokenizer, t, **chunking) for t in distinct]
    empty = prompt_chunks(tokenizer, "", emphasis=chunking["emphasis"])[0]
    k = max(len(c) for c in chunks)
    rows = [ch for c in chunks for ch in [*c, *[empty] * (k - len(c))]]  # text-major
    ids = np.array([ch.tokens for ch in rows], np.int32)
    fixes = [[(at, np.asarray(e.vectors)) for at, e in ch.embeddings] for ch in rows]
    extra = {"embeddings": fixes} if any(fixes) else {}
    raw = text_encoder(ids, clip_skip=clip_skip, **extra)
    hidden = raw.numpy().astype(np.float32).reshape(len(distinct), k, ids.shape[1], -1)
    weights = np.array([ch.weights for ch in rows], np.float64).reshape(hidden.shape[:3])
    share = np.array([counts[t] for t in distinct], np.float64)
    out = np.stack([_apply_emphasis(hidden[:, i], weights[:, i], share, chunking["emphasis"])
                    for i in range(k)], axis=1)
    return [row.reshape(-1, row.shape[-1]) for row in out], raw


@dataclass
class ConditioningSchedule:
    """The text conditioning of a batch of prompts at every sampling step.

    `prompts[b]` is the parsed prompt of batch item b; `entries` has one row per prompt part,
    item by item (item b's parts in order: the WebUI's `reconstruct_multicond_batch`), each
    row its (end_at_step, hidden states (77 * k, D) float32) list; `weights[b]` the guidance
    weights of item b's rows. Without AND a row is an item. `at(step)` gives (rows, length, D)
    on the encoder's device in its dtype; rows with fewer chunks are padded by repeating their
    last vector (the WebUI's `stack_conds`). Distinct cond and uncond lengths are run as two
    UNet evaluations in the WebUI (its `pad_cond_uncond` is off by default): compare `length`
    to detect it.
    """

    prompts: tuple[Prompt, ...]
    entries: tuple[tuple[tuple[int, np.ndarray], ...], ...]
    device: Any
    dtype: np.dtype
    _uploaded: dict[tuple[int, ...], Tensor] = field(default_factory=dict, repr=False)

    @property
    def weights(self) -> tuple[tuple[float, ...], ...]:
        """Each item's parts' guidance weights (the WebUI's `conds_list`, rows implied)."""
        return tuple(prompt.weights for prompt in self.prompts)

    @property
    def composable(self) -> bool:
        """Whether some item's prompt guides by composable diffusion (AND, a part's weight)."""
        return any(prompt.composable for prompt in self.prompts)

    @property
    def length(self) -> int:
        """Tokens along the sequence axis (77 times the most chunks in the batch)."""
        return max(cond.shape[0] for item in self.entries for _, cond in item)

    @property
    def chunks(self) -> int:
        return self.length // (CHUNK_LENGTH + 2)

    @property
    def change_steps(self) -> list[int]:
        """Steps after which some item's conditioning changes (their `end_at_step`s)."""
        return sorted({end for item in self.entries for end, _ in item[:-1]})

    def _indices(self, step: int) -> tuple[int, ...]:
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        return tuple(entry_index([end for end, _ in item], int(step)) for item in self.entries)

    def array_at(self, step: int) -> np.ndarray:
        """(B, length, D) float32 conditioning at WebUI step `step`: the 0-based number of
        model evaluations done so far (the WebUI's `CFGDenoiser.step`, which counts every
        evaluation of a second-order sampler); the first entry with step <= end_at_step."""
        return self._stack(self._indices(step))

    def at(self, step: int) -> Tensor:
        """`array_at(step)` as a Tensor for the UNet, uploaded once per distinct value."""
        key = self._indices(step)
        if key not in self._uploaded:
            tensor = asarray(self._stack(key), device=self.device)
            self._uploaded[key] = tensor if tensor.dtype == self.dtype else tensor.astype(
                self.dtype)
        return self._uploaded[key]

    def _stack(self, indices: tuple[int, ...]) -> np.ndarray:
        chosen = [item[i][1] for item, i in zip(self.entries, indices)]
        length = max(c.shape[0] for c in chosen)
        return np.stack([np.concatenate([c, np.repeat(c[-1:], length - c.shape[0], 0)])
                         for c in chosen])


def encode(tokenizer: CLIPTokenizer, text_encoder: TextEncoder,
           prompts: str | Prompt | Sequence[str | Prompt], *, steps: int, clip_skip: int = 0,
           hires_steps: int | None = None, use_old_scheduling: bool = False,
           extra_networks: bool = True, composable: bool = True, emphasis: str | None = None,
           comma_padding_backtrack: int = 20,
           embeddings: EmbeddingLookup | None = None) -> ConditioningSchedule:
    """Conditioning of a batch of prompts over `steps` WebUI steps (model evaluations).

    Strings are parsed with `prompts.parse_prompt` (`extra_networks=False, composable=False`
    for a negative prompt: the WebUI reads tags and AND there as text); pass `Prompt`s already
    parsed to skip it. Each `AND` part is encoded as a prompt of its own, each distinct part
    once, each distinct text of its schedule once: the WebUI's
    `get_multicond_learned_conditioning` (`get_learned_conditioning` for one part each).
    `clip_skip` counts layers skipped (the WebUI's "Clip skip" - 1); `emphasis` is the
    WebUI's setting of that name (None: the generation's, text.emphasis_mode); `embeddings`
    finds textual inversions.
    """
    emphasis = current_emphasis(emphasis)
    items = [prompts] if isinstance(prompts, (str, Prompt)) else list(prompts)
    if not items:
        raise ValueError("prompts is empty; give at least one prompt (the empty prompt is '')")
    parsed = [p if isinstance(p, Prompt) else parse_prompt(
        p, steps, hires_steps=hires_steps, use_old_scheduling=use_old_scheduling,
        extra_networks=extra_networks, composable=composable) for p in items]
    parts = [part for prompt in parsed for part in prompt.parts]
    done: dict[tuple[tuple[int, str], ...], tuple[tuple[int, np.ndarray], ...]] = {}
    for part in parts:
        if part.schedule in done:
            continue
        texts = [text for _, text in part.schedule]
        hidden, raw = _encode_batch(tokenizer, text_encoder, texts, clip_skip,
                                    emphasis=emphasis, embeddings=embeddings,
                                    comma_padding_backtrack=comma_padding_backtrack)
        by_text = dict(zip(dict.fromkeys(texts), hidden))
        done[part.schedule] = tuple((end, by_text[text]) for end, text in part.schedule)
    return ConditioningSchedule(tuple(parsed), tuple(done[part.schedule] for part in parts),
                                raw.device, raw.dtype)
