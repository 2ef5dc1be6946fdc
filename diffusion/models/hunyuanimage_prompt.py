"""HunyuanImage 2.1's two prompt encoders, as diffusers' HunyuanImagePipeline runs them:
Qwen2.5-VL's states of the prompt in HunyuanImage's describe-the-image template (the third
last hidden state, the template's first 34 tokens dropped, at most 1000 kept), and the
glyph encoder: the prompt's quoted texts (`extract_glyph_text`) as "Text "...". " read by
ByT5 (a T5 encoder over utf-8 bytes: `ByT5Tokenizer`), 128 tokens with their mask; zeros and
an empty mask where the prompt quotes nothing.

    states, mask = qwen_states(qwen, tokenizer, ["a sign that says 'open'"])
    glyph, glyph_mask = glyph_states(byt5, ByT5Tokenizer.from_dir(path), "a sign ...")
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..text.llm_tokenizer import LLMTokenizer
from .llm import LLMTextModel
from .t5 import T5EncoderModel

__all__ = ["GLYPH_TOKENS", "PROMPT_TEMPLATE", "TEMPLATE_TOKENS", "TEXT_TOKENS", "ByT5Tokenizer",
           "extract_glyph_text", "glyph_states", "qwen_states"]

PROMPT_TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, "
    "quantity, text, spatial relationships of the objects and background:<|im_end|>\n"
    "<|im_start|>user\n{}<|im_end|>")
TEMPLATE_TOKENS = 34  # the template's leading tokens whose states are dropped
TEXT_TOKENS = 1000  # the prompt's states kept at most (diffusers' tokenizer_max_length)
SKIP_LAYERS = 2  # Qwen2.5-VL's last layers not read: hidden_states[-(2 + 1)]
GLYPH_TOKENS = 128  # ByT5's tokens, padded or cut to this
_QUOTES = (r"\'(.*?)\'", r"\"(.*?)\"", r"‘(.*?)’", r"“(.*?)”")
_SPECIALS = {"<pad>": (0, True, True), "</s>": (1, True, True), "<unk>": (2, True, True)}


def extract_glyph_text(prompt: str) -> str | None:
    """The texts `prompt` quotes (single, double, then Chinese single and double quotes, each
    kind in order) as 'Text "a". Text "b". ', None where it quotes none. diffusers:
    `pipeline_hunyuanimage.extract_glyph_text`."""
    texts = [text for pattern in _QUOTES for text in re.findall(pattern, prompt)]
    return ". ".join(f'Text "{text}"' for text in texts) + ". " if texts else None


class ByT5Tokenizer:
    """ByT5's tokenizer: each utf-8 byte b is token b + 3 (0 pad, 1 end of text, 2 unknown),
    the tokenizer's added tokens (its `added_tokens_decoder`: `<extra_id_0>` = 259, ...)
    matched first, whitespace beside those that strip it dropped. transformers:
    `ByT5Tokenizer(text, padding="max_length", max_length=, truncation=True)`."""

    def __init__(self, added: dict[str, tuple[int, bool, bool]] | None = None) -> None:
        self.added = dict(_SPECIALS if added is None else added)
        names = sorted(self.added, key=len, reverse=True)
        self._split = re.compile("|".join(map(re.escape, names))) if names else None

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str]) -> ByT5Tokenizer:
        """The tokenizer of a folder's tokenizer_config.json (its added tokens), or ByT5's
        own where the folder has none."""
        import json

        config = Path(path) / "tokenizer_config.json"
        if not config.is_file():
            return cls()
        decoder = json.loads(config.read_text(encoding="utf-8")).get("added_tokens_decoder")
        if not decoder:
            return cls()
        return cls({entry["content"]: (int(key), bool(entry.get("lstrip")),
                                       bool(entry.get("rstrip")))
                    for key, entry in decoder.items()})

    def ids(self, text: str) -> list[int]:
        """`text`'s tokens, no end token."""
        out: list[int] = []
        start, strip_next = 0, False
        for match in self._split.finditer(text) if self._split else ():
            token, lstrip, rstrip = self.added[match.group()]
            piece = text[start:match.start()]
            piece = piece.lstrip() if strip_next else piece
            out += [b + 3 for b in (piece.rstrip() if lstrip else piece).encode("utf-8")]
            out.append(token)
            start, strip_next = match.end(), rstrip
        rest = text[start:]
        return out + [b + 3 for b in (rest.lstrip() if strip_next else rest).encode("utf-8")]

    def __call__(self, text: str, max_length: int = GLYPH_TOKENS) -> tuple[np.ndarray,
                                                                          np.ndarray]:
        """(1, max_length) ids and mask: `text`'s tokens cut to max_length - 1, the end token
        (1) unless they end with it already, zeros after."""
        tokens = self.ids(text)[: max_length - 1]
        tokens += [] if tokens[-1:] == [1] else [1]
        ids = np.zeros((1, max_length), np.int64)
        ids[0, : len(tokens)] = tokens
        mask = (np.arange(max_length) < len(tokens)).astype(np.int64)[None]
        return ids, mask


def glyph_states(encoder: T5EncoderModel, tokenizer: ByT5Tokenizer, prompt: str, *,
                 extract: Callable[[str], str | None] = extract_glyph_text,
                 length: int = GLYPH_TOKENS) -> tuple[np.ndarray, np.ndarray]:
    """(1, length) float32 states (x d_model) and mask of `prompt`'s quoted texts (`extract`:
    HunyuanImage's quotes, or another family's) through ByT5; zeros and a zero mask where it
    quotes nothing. diffusers: `HunyuanImagePipeline.encode_prompt`'s `prompt_embeds_2`,
    `prompt_embeds_mask_2` (128 tokens; HunyuanVideo 1.5's `_get_byt5_prompt_embeds`, 256)."""
    glyph = extract(prompt)
    if glyph is None:
        width = encoder.config["d_model"]
        return np.zeros((1, length, width), np.float32), np.zeros((1, length), np.int64)
    ids, mask = tokenizer(glyph, length)
    return encoder(ids, mask).numpy().astype(np.float32), mask


def qwen_states(encoder: LLMTextModel, tokenizer: LLMTokenizer, prompts: Sequence[str], *,
                template: str = PROMPT_TEMPLATE, template_tokens: int = TEMPLATE_TOKENS,
                text_tokens: int = TEXT_TOKENS) -> tuple[np.ndarray, np.ndarray]:
    """(B, L, hidden) float32 states of `prompts` and their (B, L) mask: Qwen2.5-VL's
    hidden_states[-3] of each templated prompt (cut to text_tokens + template_tokens: 1034),
    the template's first template_tokens (34) dropped, right-padded with zeros to the longest.
    diffusers: `HunyuanImagePipeline.
    _get_qwen_prompt_embeds`, which pads to 1000 with the padded tokens' states masked (the
    transformer reads neither). `template`, `template_tokens`, `text_tokens`: another
    pipeline's (the refiner's: pipelines.flow.hunyuanimage_refiner)."""
    texts = [template.format(p) for p in prompts]
    ids, mask = tokenizer(texts, text_tokens + template_tokens, padding="longest")
    states = encoder.hidden_states(ids, mask, layer=-(SKIP_LAYERS + 1)).numpy()
    rows: list[np.ndarray] = []
    for row, keep in enumerate(mask.astype(bool)):
        kept = np.flatnonzero(keep)
        if len(kept) <= template_tokens or kept[-1] - kept[0] + 1 != len(kept):
            raise ValueError("a prompt's tokens must be one run (left or right padding) "
                             f"longer than the template's first {template_tokens}")
        rows.append(states[row, kept[0] + template_tokens: kept[-1] + 1])
    length = max(len(r) for r in rows)
    out = np.zeros((len(rows), length, states.shape[-1]), np.float32)
    keep_mask = np.zeros((len(rows), length), np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)], keep_mask[i, : len(r)] = r, 1
    return out, keep_mask
