"""ChatGLM3's tokenizer (Kolors' tokenizer/, diffusers' pipelines/kolors/tokenizer.py
`ChatGLMTokenizer`) on the `tokenizers` library, from its SentencePiece BPE `tokenizer.model`
(read by sentencepiece_model; the sentencepiece library is not needed).

The BPE is rebuilt as transformers' converters rebuild a SentencePiece BPE (LlamaConverter):
the pieces are the vocabulary; the merges are every split of a piece into two pieces, ranked by
the merged piece's score (SentencePiece merges the adjacent pair whose result scores highest);
characters outside the vocabulary fall back to their UTF-8 bytes' <0xXX> pieces where the model
was trained with byte fallback, else to <unk>. The normalizer does what the model's spec says:
its precompiled map, spaces trimmed and runs of them made one (remove_extra_whitespaces), "▁"
before the text (add_dummy_prefix) and for every space.

ChatGLM frames a prompt as [gMASK] sop, then its pieces (the ids after the SentencePiece
vocabulary: [MASK], [gMASK], [sMASK], sop, eop, ...), truncated to `max_length` and padded on
the left with <unk>'s id, the attention mask 0 and the position ids 0 over the padding and
0, 1, ... over the tokens. diffusers: `ChatGLMTokenizer(prompts, padding="max_length",
max_length=256, truncation=True)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, models, normalizers

from .sentencepiece_model import BPE, NORMAL, SentencePieceModel, read_sentencepiece

__all__ = ["ChatGLMTokenizer", "sentencepiece_bpe"]

# after the SentencePiece vocabulary, in this order (diffusers' SPTokenizer.special_tokens)
SPECIAL = ("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<|system|>", "<|user|>",
           "<|assistant|>", "<|observation|>")


def _merges(model: SentencePieceModel) -> list[tuple[str, str]]:
    """Every (left, right) whose join is a piece, both halves pieces too, the highest-scoring
    join first (then the lower id, the shorter left half: transformers' `generate_merges`)."""
    ids = {piece: i for i, (piece, _, kind) in enumerate(model.pieces) if kind == NORMAL}
    ranked = []
    for piece, i in ids.items():
        score = model.pieces[i][1]
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in ids and right in ids:
                ranked.append((-score, i, cut, left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def sentencepiece_bpe(model: SentencePieceModel) -> Tokenizer:
    """A SentencePiece BPE model as a `tokenizers` Tokenizer (module docstring): its ids are
    the model's, no special tokens added. transformers: `LlamaConverter`'s tokenizer of the
    same model (legacy, no pre-tokenizer)."""
    vocab = {piece: i for i, (piece, _, _) in reversed(list(enumerate(model.pieces)))}
    unk = model.pieces[model.unk_id][0]
    tokenizer = Tokenizer(models.BPE(vocab, _merges(model), unk_token=unk, fuse_unk=True,
                                     byte_fallback=model.byte_fallback))
    steps: list[normalizers.Normalizer] = []
    if model.precompiled_charsmap:
        steps.append(normalizers.Precompiled(model.precompiled_charsmap))
    if model.remove_extra_whitespaces:
        steps += [normalizers.Replace(Regex("^ +| +$"), ""),
                  normalizers.Replace(Regex(" {2,}"), " ")]
    if model.add_dummy_prefix:
        steps.append(normalizers.Prepend("▁"))
    if model.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "▁"))
    tokenizer.normalizer = normalizers.Sequence(steps)
    return tokenizer


class ChatGLMTokenizer:
    """Prompts -> ChatGLM's (ids, attention mask, position ids), each (B, max_length) int64
    (module docstring). `path`: the tokenizer folder (its tokenizer.model) or the file."""

    def __init__(self, path: str | Path, *, max_length: int = 256) -> None:
        path = Path(path)
        file = path / "tokenizer.model" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no ChatGLM tokenizer.model at {file}; Kolors' tokenizer/ "
                                    "folder ships one (copy it from Kwai-Kolors/Kolors-diffusers)")
        model = read_sentencepiece(file)
        if model.model_type != BPE or model.treat_whitespace_as_suffix:
            raise ValueError(f"{file} is not a BPE SentencePiece model with whitespace as a "
                             "prefix, as ChatGLM3's is")
        if int(max_length) != max_length or max_length < 3:
            raise ValueError(f"max_length must be an int of at least 3, got {max_length!r}")
        self.tokenizer, self.max_length = sentencepiece_bpe(model), int(max_length)
        self.pad_id = model.unk_id  # ChatGLM pads with <unk>
        self.special = {token: len(model.pieces) + i for i, token in enumerate(SPECIAL)}

    def pieces(self, text: str) -> list[int]:
        """The SentencePiece ids of `text`, nothing added. diffusers:
        `SPTokenizer.encode(text)`."""
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def __call__(self, prompts: str | Sequence[str]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be strings")
        length = self.max_length
        ids = np.full((len(prompts), length), self.pad_id, np.int64)
        mask = np.zeros((len(prompts), length), np.int64)
        positions = np.zeros((len(prompts), length), np.int64)
        for row, prompt in enumerate(prompts):
            tokens = [self.special["[gMASK]"], self.special["sop"],
                      *self.pieces(prompt)[:length - 2]]
            ids[row, length - len(tokens):] = tokens
            mask[row, length - len(tokens):] = 1
            positions[row, length - len(tokens):] = np.arange(len(tokens))
        return ids, mask, positions
