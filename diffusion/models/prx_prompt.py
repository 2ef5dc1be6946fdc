"""PRX's prompt, as diffusers' PRXPipeline reads it: the text cleaned (DeepFloyd IF's caption
cleaning, `clean_text`; `skip_text_cleaning`: `basic_clean` only), Gemma's tokens truncated to
the tokenizer's model_max_length and padded, T5Gemma's encoder's last states with the padding
mask (the transformer leaves the padding out of its attention).

diffusers pads every prompt to model_max_length; `encode` pads a right-padding tokenizer's
batch to its longest prompt only, which gives the same conditioning: the encoder's real tokens
never attend to the padding, and the transformer never reads it. (A left-padding tokenizer is
padded in full: its padding moves the tokens' positions.)

ftfy (diffusers' mojibake repair, `ftfy.fix_text`, a step of both cleanings) is not a
dependency here: `_fix_text` does what it does to text that is not mojibake (Unicode NFC, curly
quotes straightened, control characters dropped); a prompt of plain text reads the same.

    states, mask = encode(encoder, tokenizer, ["a fox in the snow"], max_tokens=256)
"""

from __future__ import annotations

import html
import re
import unicodedata
import urllib.parse as ul
from collections.abc import Sequence

import numpy as np

from gpustd import Tensor

from ..text.llm_tokenizer import LLMTokenizer
from .t5gemma import T5GemmaEncoder

__all__ = ["basic_clean", "clean_text", "encode"]

# diffusers' TextPreprocessor.bad_punct_regex
_BAD_PUNCT = re.compile(
    r"["
    + "#®•©™&@·º½¾¿¡§~"
    + r"\)"
    + r"\("
    + r"\]"
    + r"\["
    + r"\}"
    + r"\{"
    + r"\|"
    + r"\\"
    + r"\/"
    + r"\*"
    + r"]{1,}"
)

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})


def _fix_text(text: str) -> str:
    """ftfy.fix_text's effect on text that is not mojibake: NFC, curly quotes straight,
    control characters (but newlines and tabs) dropped."""
    text = unicodedata.normalize("NFC", text).translate(_QUOTES)
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c) != "Cc")


def clean_text(text: str) -> str:
    """DeepFloyd IF's caption cleaning (lower case; URLs, handles, CJK, ids, file names and
    spam phrases removed; dashes and quotes unified). diffusers:
    `TextPreprocessor().clean_text(text)` (the module's docstring says how ftfy differs)."""
    text = str(text)
    text = ul.unquote_plus(text)
    text = text.strip().lower()
    text = re.sub("<person>", "person", text)

    # Remove all urls:
    text = re.sub(
        r"\b((?:https?|www):(?:\/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+[.](?:com|co|ru|net|org|edu|gov|it)[\w/-]*\b\/?(?!@))",
        "",
        text,
    )  # regex for urls

    # @<nickname>
    text = re.sub(r"@[\w\d]+\b", "", text)

    # 31C0—31EF CJK Strokes through 4E00—9FFF CJK Unified Ideographs
    text = re.sub(r"[\u31c0-\u31ef]+", "", text)
    text = re.sub(r"[\u31f0-\u31ff]+", "", text)
    text = re.sub(r"[\u3200-\u32ff]+", "", text)
    text = re.sub(r"[\u3300-\u33ff]+", "", text)
    text = re.sub(r"[\u3400-\u4dbf]+", "", text)
    text = re.sub(r"[\u4dc0-\u4dff]+", "", text)
    text = re.sub(r"[\u4e00-\u9fff]+", "", text)

    # все виды тире / all types of dash --> "-"
    text = re.sub(
        r"[\u002D\u058A\u05BE\u1400\u1806\u2010-\u2015\u2E17\u2E1A\u2E3A\u2E3B\u2E40\u301C\u3030\u30A0\uFE31\uFE32\uFE58\uFE63\uFF0D]+",
        "-",
        text,
    )

    # кавычки к одному стандарту
    text = re.sub(r"[`´«»" "¨]", '"', text)
    text = re.sub(r"['']", "'", text)

    # &quot; and &amp
    text = re.sub(r"&quot;?", "", text)
    text = re.sub(r"&amp", "", text)

    # ip addresses:
    text = re.sub(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", " ", text)

    # article ids:
    text = re.sub(r"\d:\d\d\s+$", "", text)

    # \n
    text = re.sub(r"\\n", " ", text)

    # "#123", "#12345..", "123456.."
    text = re.sub(r"#\d{1,3}\b", "", text)
    text = re.sub(r"#\d{5,}\b", "", text)
    text = re.sub(r"\b\d{6,}\b", "", text)

    # filenames:
    text = re.sub(r"[\S]+\.(?:png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4)", "", text)

    # Clean punctuation
    text = re.sub(r"[\"\']{2,}", r'"', text)  # """AUSVERKAUFT"""
    text = re.sub(r"[\.]{2,}", r" ", text)

    text = re.sub(_BAD_PUNCT, r" ", text)  # ***AUSVERKAUFT***, #AUSVERKAUFT
    text = re.sub(r"\s+\.\s+", r" ", text)  # " . "

    # this-is-my-cute-cat / this_is_my_cute_cat
    regex2 = re.compile(r"(?:\-|\_)")
    if len(re.findall(regex2, text)) > 3:
        text = re.sub(regex2, " ", text)

    # Basic cleaning
    text = _fix_text(text)
    text = html.unescape(html.unescape(text))
    text = text.strip()

    # Clean alphanumeric patterns
    text = re.sub(r"\b[a-zA-Z]{1,3}\d{3,15}\b", "", text)  # jc6640
    text = re.sub(r"\b[a-zA-Z]+\d+[a-zA-Z]+\b", "", text)  # jc6640vc
    text = re.sub(r"\b\d+[a-zA-Z]+\d+\b", "", text)  # 6640vc231

    # Common spam patterns
    text = re.sub(r"(worldwide\s+)?(free\s+)?shipping", "", text)
    text = re.sub(r"(free\s)?download(\sfree)?", "", text)
    text = re.sub(r"\bclick\b\s(?:for|on)\s\w+", "", text)
    text = re.sub(r"\b(?:png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4)(\simage[s]?)?", "", text)
    text = re.sub(r"\bpage\s+\d+\b", "", text)

    text = re.sub(r"\b\d*[a-zA-Z]+\d+[a-zA-Z]+\d+[a-zA-Z\d]*\b", r" ", text)  # j2d1a2a...
    text = re.sub(r"\b\d+\.?\d*[xх×]\d+\.?\d*\b", "", text)

    # Final cleanup
    text = re.sub(r"\b\s+\:\s+", r": ", text)
    text = re.sub(r"(\D[,\./])\b", r"\1 ", text)
    text = re.sub(r"\s+", " ", text)


    text = re.sub(r"^[\"\']([\w\W]+)[\"\']$", r"\1", text)
    text = re.sub(r"^[\'\_,\-\:;]", r"", text)
    text = re.sub(r"[\'\_,\-\:\-\+]$", r"", text)
    text = re.sub(r"^\.\S+$", "", text)

    return text.strip()


def basic_clean(text: str) -> str:
    """The light cleaning (mojibake repair, HTML unescaped twice, stripped). diffusers:
    `TextPreprocessor().basic_clean(text)`."""
    return html.unescape(html.unescape(_fix_text(text))).strip()


def encode(encoder: T5GemmaEncoder, tokenizer: LLMTokenizer, prompts: Sequence[str], *,
           max_tokens: int, skip_text_cleaning: bool = False) -> tuple[Tensor, np.ndarray]:
    """The prompts' states (B, L, hidden) float32 and mask (B, L) int64 (1 a real token), L
    the longest prompt's tokens (max_tokens with a left-padding tokenizer): each prompt
    cleaned, tokenized, cut to `max_tokens`. diffusers: `PRXPipeline._encode_prompt_standard`
    (its `embeddings` and `attention_mask`)."""
    clean = basic_clean if skip_text_cleaning else clean_text
    padding = "max_length" if tokenizer.padding_side == "left" else "longest"
    ids, mask = tokenizer([clean(p) for p in prompts], max_tokens, padding=padding)
    return encoder.hidden_states(ids, mask), mask
