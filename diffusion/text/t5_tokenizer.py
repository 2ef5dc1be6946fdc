"""T5's SentencePiece (Unigram) tokenizer from a `tokenizer.json`, on the `tokenizers` library:
the text side of FLUX's and SD3's T5-XXL encoder (`tokenizer_2/` of a FLUX folder,
`tokenizer_3/` of an SD3 one).

The file carries the whole pipeline (normalizer, Metaspace pre-tokenizer, Unigram model and
the post-processor that appends </s>), so nothing here re-implements it: prompts are encoded,
truncated to `max_length` with </s> kept last, and padded with <pad>, as diffusers' pipelines
call transformers' `T5TokenizerFast(padding="max_length", truncation=True)`.

Without a file (single-file FLUX / SD3 checkpoints come without one) the tokenizer is T5 v1.1's
own, rebuilt from the vocabulary that ships with this package (`data/t5_vocab.json.gz`: its
32,000 pieces and scores and its precompiled normalization map; Apache-2.0, see
data/LICENSE-t5.txt) into the pipeline its tokenizer.json describes.
"""

from __future__ import annotations

import base64
import functools
import gzip
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import cast

import numpy as np
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

__all__ = ["T5Tokenizer", "bundled_t5_tokenizer"]

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
SENTINELS = 100  # <extra_id_99> ... <extra_id_0>, after the pieces


@functools.lru_cache(maxsize=1)
def _bundled_vocab() -> dict[str, object]:
    data = resources.files("diffusion").joinpath("data/t5_vocab.json.gz").read_bytes()
    return json.loads(gzip.decompress(data))  # type: ignore[no-any-return]


def bundled_t5_tokenizer() -> Tokenizer:
    """T5 v1.1's tokenizer (google/t5-v1_1-xxl's tokenizer.json, as transformers converts its
    SentencePiece model) from the bundled vocabulary: the precompiled nmt_nfkc map, runs of
    spaces made one; Metaspace ("▁" before every word); Unigram over the 32,000 pieces (<unk>
    id 2) and the 100 sentinels; "$A </s>". transformers: `T5TokenizerFast.from_pretrained(
    "google/t5-v1_1-xxl")._tokenizer`."""
    vocab = _bundled_vocab()
    pieces = [(piece, float(np.float32(score)))
              for piece, score in zip(vocab["pieces"], vocab["scores"])]  # type: ignore[call-overload]
    sentinels = [f"<extra_id_{SENTINELS - 1 - i}>" for i in range(SENTINELS)]
    tokenizer = Tokenizer(models.Unigram([*pieces, *((s, 0.0) for s in sentinels)], unk_id=2,
                                         byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Precompiled(base64.b64decode(vocab["precompiled_charsmap"])),  # type: ignore[arg-type]
        normalizers.Replace(Regex(" {2,}"), " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, 1)])
    tokenizer.add_special_tokens([AddedToken(token, normalized=False, special=True)
                                  for token in (PAD, EOS, UNK, *sentinels)])
    return tokenizer


class T5Tokenizer:
    """Prompts -> (B, max_length) token ids for a T5 encoder.

    `path`: a `tokenizer.json`, or a folder holding one; None: T5 v1.1's, from the bundled
    vocabulary (`bundled_t5_tokenizer`). `max_length`: the sequence length
    every prompt is truncated or padded to (FluxPipeline: 512 for dev, 256 for schnell;
    StableDiffusion3Pipeline: 256). `pad_token`: what pads the prompts (a Llama-style
    SentencePiece without <pad>, AuraFlow's, names its own). transformers:
    `T5TokenizerFast(tokenizer_file=path)(prompts, padding="max_length", max_length=n,
    truncation=True).input_ids`.
    """

    def __init__(self, path: str | Path | None = None, *, max_length: int = 512,
                 pad_token: str = PAD) -> None:
        if int(max_length) != max_length or max_length < 1:
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        if path is None:
            self.tokenizer = bundled_t5_tokenizer()
            self.pad_id, self.max_length = self.tokenizer.token_to_id(PAD), int(max_length)
            self.pad_token = PAD
            return
        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(
                f"no T5 tokenizer.json at {file}; a folder with only spiece.model needs its "
                "tokenizer.json (transformers writes one: T5TokenizerFast.from_pretrained("
                "folder).save_pretrained(folder))")
        try:
            self.tokenizer = Tokenizer.from_file(str(file))
        except Exception as error:  # tokenizers raises its own Exception type
            raise ValueError(f"{file} is not a tokenizers tokenizer.json ({error})") from error
        pad_id = self.tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"{file} has no {pad_token} token; it is not a T5 tokenizer")
        self.pad_id, self.pad_token, self.max_length = pad_id, pad_token, int(max_length)

    @property
    def eos_id(self) -> int:
        """The id of </s>, which ends every prompt."""
        return cast(int, self.tokenizer.token_to_id(EOS))  # every T5 tokenizer has </s>

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """The ids of each text without </s>, not truncated or padded: the pieces a weighted
        prompt is put together from. transformers: `tokenizer(texts, truncation=False,
        add_special_tokens=False).input_ids`."""
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be strings")
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        return [e.ids for e in self.tokenizer.encode_batch(list(texts),
                                                           add_special_tokens=False)]

    def __call__(self, prompts: str | Sequence[str], max_length: int | None = None
                 ) -> np.ndarray:
        """One prompt or a list -> int64 ids (B, max_length): the pieces, </s>, then <pad>s;
        a longer prompt loses its last pieces, never the </s>."""
        return self.encode(prompts, max_length)[0]

    def encode(self, prompts: str | Sequence[str], max_length: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, attention mask) (B, max_length) int64: the ids of `__call__`, and 1 for
        each prompt's tokens, 0 for the padding. transformers: `(out.input_ids,
        out.attention_mask)` of the call above."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be strings")
        length = self.max_length if max_length is None else int(max_length)
        self.tokenizer.enable_truncation(max_length=length)
        self.tokenizer.enable_padding(length=length, pad_id=self.pad_id,
                                      pad_token=self.pad_token)
        encodings = self.tokenizer.encode_batch(prompts)
        shape = (len(prompts), length)
        return (np.array([e.ids for e in encodings], dtype=np.int64).reshape(shape),
                np.array([e.attention_mask for e in encodings], dtype=np.int64).reshape(shape))
