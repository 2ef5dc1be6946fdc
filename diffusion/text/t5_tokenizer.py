"""T5's SentencePiece (Unigram) tokenizer from a `tokenizer.json`, on the `tokenizers` library:
the text side of FLUX's and SD3's T5-XXL encoder (`tokenizer_2/` of a FLUX folder,
`tokenizer_3/` of an SD3 one).

The file carries the whole pipeline (normalizer, Metaspace pre-tokenizer, Unigram model and
the post-processor that appends </s>), so nothing here re-implements it: prompts are encoded,
truncated to `max_length` with </s> kept last, and padded with <pad>, as diffusers' pipelines
call transformers' `T5TokenizerFast(padding="max_length", truncation=True)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

__all__ = ["T5Tokenizer"]

PAD = "<pad>"


class T5Tokenizer:
    """Prompts -> (B, max_length) token ids for a T5 encoder.

    `path`: a `tokenizer.json`, or a folder holding one. `max_length`: the sequence length
    every prompt is truncated or padded to (FluxPipeline: 512 for dev, 256 for schnell;
    StableDiffusion3Pipeline: 256). transformers: `T5TokenizerFast(tokenizer_file=path)(
    prompts, padding="max_length", max_length=n, truncation=True).input_ids`.
    """

    def __init__(self, path: str | Path, *, max_length: int = 512) -> None:
        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(
                f"no T5 tokenizer.json at {file}; a folder with only spiece.model needs its "
                "tokenizer.json (transformers writes one: T5TokenizerFast.from_pretrained("
                "folder).save_pretrained(folder))")
        if int(max_length) != max_length or max_length < 1:
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        try:
            self.tokenizer = Tokenizer.from_file(str(file))
        except Exception as error:  # tokenizers raises its own Exception type
            raise ValueError(f"{file} is not a tokenizers tokenizer.json ({error})") from error
        pad_id = self.tokenizer.token_to_id(PAD)
        if pad_id is None:
            raise ValueError(f"{file} has no {PAD} token; it is not a T5 tokenizer")
        self.pad_id, self.max_length = pad_id, int(max_length)

    def __call__(self, prompts: str | Sequence[str], max_length: int | None = None
                 ) -> np.ndarray:
        """One prompt or a list -> int64 ids (B, max_length): the pieces, </s>, then <pad>s;
        a longer prompt loses its last pieces, never the </s>."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be strings")
        length = self.max_length if max_length is None else int(max_length)
        self.tokenizer.enable_truncation(max_length=length)
        self.tokenizer.enable_padding(length=length, pad_id=self.pad_id, pad_token=PAD)
        encodings = self.tokenizer.encode_batch(prompts)
        return np.array([e.ids for e in encodings], dtype=np.int64).reshape(len(prompts), length)
