"""LongCat-Image's prompt tokens and positions, as diffusers' LongCatImagePipeline makes them:
the prompt's quoted text (between '', "", ‘’ or “”, quotes included) tokenized one character
at a time so the model can spell it, the rest as usual; the tokens cut or padded to 512 and
put inside the image-captioning chat template, whose states are dropped again after the text
encoder. Every one of the 512 places reaches the transformer (padding included, unmasked),
text at positions (0, i, i), image patches at (1, 512 + row, 512 + column).

    ids, mask, kept = prompt_tokens(tokenizer, ["a sign that says 'OPEN'"])
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ..text.llm_tokenizer import LLMTokenizer

__all__ = ["EDIT_TEMPLATE_PREFIX", "TEMPLATE_PREFIX", "TEMPLATE_SUFFIX", "TEXT_TOKENS",
           "image_positions", "prompt_tokens", "split_quotation", "text_positions"]

TEMPLATE_PREFIX = (
    "<|im_start|>system\nAs an image captioning expert, generate a descriptive text prompt "
    "based on an image content, suitable for input to a text-to-image model.<|im_end|>\n"
    "<|im_start|>user\n")
TEMPLATE_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
EDIT_TEMPLATE_PREFIX = (
    "<|im_start|>system\nAs an image editing expert, first analyze the content and attributes "
    "of the input image(s). Then, based on the user's editing instructions, clearly and "
    "precisely determine how to modify the given image(s), ensuring that only the specified "
    "parts are altered and all other aspects remain consistent with the original(s)."
    "<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>")
TEXT_TOKENS = 512  # diffusers' tokenizer_max_length: the prompt's padded length
_QUOTES = (("'", "'"), ('"', '"'), ("\u2018", "\u2019"), ("\u201c", "\u201d"))
_INSIDE_WORD = re.compile(r"[a-zA-Z]+'[a-zA-Z]+")
_PLACEHOLDER = "longcat_$##$_longcat"


def split_quotation(prompt: str) -> list[tuple[str, bool]]:
    """`prompt` in pieces, each with whether it is quoted text (its quotes included); an
    apostrophe inside a word ("don't") quotes nothing. diffusers: `split_quotation` (which
    numbers the words in set order, which varies between processes; here in order of
    appearance, putting them back longest placeholder first so that none is read inside
    another)."""
    words = list(dict.fromkeys(_INSIDE_WORD.findall(prompt)))
    mapping = [(word, _PLACEHOLDER * (i + 1)) for i, word in enumerate(words)]
    for word, placeholder in mapping:
        prompt = prompt.replace(word, placeholder)
    pattern = "|".join(re.escape(a) + "[^" + re.escape(a + b) + "]*?" + re.escape(b)
                       for a, b in _QUOTES)
    out = []
    for part in re.split(f"({pattern})", prompt):
        for word, placeholder in reversed(mapping):
            part = part.replace(placeholder, word)
        if part:
            out.append((part, re.match(pattern, part) is not None))
    return out


def _ids(tokenizer: LLMTokenizer, text: str) -> list[int]:
    return list(tokenizer.tokenizer.encode(text, add_special_tokens=False).ids)


def prompt_tokens(tokenizer: LLMTokenizer, prompts: Sequence[str], *,
                  prefix_text: str = TEMPLATE_PREFIX, kept_from: str | None = None
                  ) -> tuple[np.ndarray, np.ndarray, slice]:
    """(ids (B, L), attention mask (B, L), the places whose states the transformer reads):
    each prompt's tokens (quoted text a character at a time) cut to TEXT_TOKENS, padded to it
    on the tokenizer's padding side, between the template's prefix and suffix. diffusers:
    `LongCatImagePipeline._encode_prompt`'s `input_ids`, `attention_mask` and
    `[prefix_len:-suffix_len]`. The edit model's: `prefix_text` EDIT_TEMPLATE_PREFIX with its
    image pads expanded (`qwen_vl_prompt.expand_image_pads`), the states kept from its
    `kept_from` token on ("<|vision_start|>": the picture's tokens are read too), as
    LongCatImageEditPipeline._encode_prompt."""
    rows = []
    for prompt in prompts:
        tokens: list[int] = []
        for piece, quoted in split_quotation(prompt):
            if quoted:
                for character in piece:
                    tokens += _ids(tokenizer, character)
            else:
                tokens += _ids(tokenizer, piece)
        rows.append(tokens[:TEXT_TOKENS])
    ids = np.full((len(rows), TEXT_TOKENS), tokenizer.pad_id, np.int64)
    mask = np.zeros((len(rows), TEXT_TOKENS), np.int64)
    for row, tokens in enumerate(rows):
        span = (slice(TEXT_TOKENS - len(tokens), TEXT_TOKENS)
                if tokenizer.padding_side == "left" else slice(0, len(tokens)))
        ids[row, span] = tokens
        mask[row, span] = 1
    prefix = np.asarray(_ids(tokenizer, prefix_text), np.int64)
    suffix = np.asarray(_ids(tokenizer, TEMPLATE_SUFFIX), np.int64)
    batch = len(rows)

    def around(middle: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
        return np.concatenate([np.broadcast_to(first, (batch, len(first))), middle,
                               np.broadcast_to(last, (batch, len(last)))], axis=1)

    start = len(prefix)
    if kept_from is not None:
        token = tokenizer.tokenizer.token_to_id(kept_from)
        if token is None or token not in prefix:
            raise ValueError(f"the tokenizer has no {kept_from} token in the template; give "
                             "the model folder's own tokenizer/")
        start = int(np.flatnonzero(prefix == token)[0])
    kept = slice(start, len(prefix) + TEXT_TOKENS)
    return (around(ids, prefix, suffix),
            around(mask, np.ones_like(prefix), np.ones_like(suffix)), kept)


def text_positions(length: int = TEXT_TOKENS) -> np.ndarray:
    """(length, 3) float32: token i at (0, i, i). diffusers: `prepare_pos_ids(modality_id=0,
    type="text")`."""
    out = np.zeros((length, 3), np.float32)
    out[:, 1] = out[:, 2] = np.arange(length)
    return out


def image_positions(rows: int, columns: int, start: int = TEXT_TOKENS) -> np.ndarray:
    """(rows * columns, 3) float32: patch (r, c) at (1, start + r, start + c), row-major.
    diffusers: `prepare_pos_ids(modality_id=1, type="image", start=(512, 512))`."""
    r, c = np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij")
    return np.stack([np.ones(rows * columns), start + r.reshape(-1), start + c.reshape(-1)],
                    axis=1).astype(np.float32)
