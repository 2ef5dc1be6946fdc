"""Qwen2's byte-level BPE from a tokenizer folder without `tokenizer.json`: `vocab.json`,
`merges.txt` and the added tokens of `tokenizer_config.json` (`added_tokens_decoder`), the
files of a "slow" `Qwen2Tokenizer` folder (Qwen-Image's tokenizer/). The pipeline is
transformers' `Qwen2Tokenizer`'s: NFC, a split by Qwen2's pre-tokenizing pattern, bytes to
the byte-level alphabet, BPE; the added tokens at their declared ids.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE

__all__ = ["has_vocab_files", "qwen2_tokenizer"]

# transformers' Qwen2Tokenizer's PRETOKENIZE_REGEX
_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
            r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")


def has_vocab_files(folder: Path) -> bool:
    """Whether `folder` holds a slow tokenizer's vocab.json and merges.txt."""
    return (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()


def qwen2_tokenizer(folder: Path) -> Tokenizer:
    """The `tokenizers` Tokenizer of the vocab.json / merges.txt / tokenizer_config.json in
    `folder`. transformers: `Qwen2Tokenizer.from_pretrained(folder)`'s `backend_tokenizer`.
    ValueError when an added token would not get its declared id."""
    tokenizer = Tokenizer(BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt"),
                                        dropout=None, unk_token=None, fuse_unk=False,
                                        byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    added = config.get("added_tokens_decoder") or {}
    for key in sorted(added, key=int):
        entry = added[key]
        token = AddedToken(entry["content"], single_word=entry.get("single_word", False),
                           lstrip=entry.get("lstrip", False), rstrip=entry.get("rstrip", False),
                           normalized=entry.get("normalized", False),
                           special=entry.get("special", True))
        if token.special:
            tokenizer.add_special_tokens([token])
        else:
            tokenizer.add_tokens([token])
        if tokenizer.token_to_id(entry["content"]) != int(key):
            raise ValueError(f"{config_file}: added token {entry['content']!r} is declared as id "
                             f"{key} but the vocabulary puts it at "
                             f"{tokenizer.token_to_id(entry['content'])}; the files disagree")
    return tokenizer
