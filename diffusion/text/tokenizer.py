"""CLIP's byte-level BPE tokenizer (the text side of Stable Diffusion), on the `tokenizers` library.

The same pipeline as transformers' `CLIPTokenizer`: NFC, whitespace runs -> one space,
lowercase; CLIP's split regex; byte-to-unicode mapping; BPE with a `</w>` end-of-word suffix;
<|startoftext|> (49406) ... <|endoftext|> (49407). The vocabulary comes from a model folder's
`tokenizer/` (vocab.json + merges.txt) or, failing that, from the merges bundled with this package
(`data/bpe_simple_vocab_16e6.txt.gz`, from open_clip; MIT, see data/LICENSE-open_clip.txt).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, cast

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE

__all__ = ["CLIPTokenizer", "bundled_vocab"]

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# CLIP's pre-tokenizer: contractions, letter runs, single digits, punctuation runs
_SPLIT = (r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d"
          r"|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+")


def _bytes_to_unicode() -> list[str]:
    """GPT-2's reversible map of the 256 bytes to printable characters, in CLIP's order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in [*keep, *(b for b in range(256) if b not in keep)]]


@functools.lru_cache(maxsize=1)
def bundled_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of CLIP ViT-L/14 built from the bundled merges file, as OpenAI's CLIP
    builds them: 256 byte characters, the same with `</w>`, 48,894 merges, then BOS and EOS
    (49,408 entries)."""
    data = resources.files("diffusion").joinpath("data/bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.decompress(data.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
    byte_chars = _bytes_to_unicode()
    tokens = [*byte_chars, *(c + "</w>" for c in byte_chars), *("".join(m) for m in merges),
              BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}, merges  # type: ignore[return-value]


# Built BPE tokenizers by (where the vocabulary came from, pad token): a pipeline loads its
# folder's tokenizer every time it is loaded (tests and model switches load the same folders
# over and over), and parsing CLIP's 49,408-entry vocabulary and building the BPE costs
# ~130 ms of CPU, most of a warm load. The `tokenizers.Tokenizer` is never changed after it is
# built, so CLIPTokenizers of the same vocabulary share one.
_BUILT_MAX = 4
_built: OrderedDict[tuple[str, str], Tokenizer] = OrderedDict()
_built_lock = threading.Lock()


def _built_once(key: tuple[str, str], build: Callable[[], Tokenizer]) -> Tokenizer:
    """The tokenizer built for `key`, built by `build()` the first time (least recently used
    ones dropped past _BUILT_MAX)."""
    with _built_lock:
        if key in _built:
            _built.move_to_end(key)
            return _built[key]
    tokenizer = build()  # outside the lock: a build raises on a bad vocabulary
    with _built_lock:
        _built[key] = tokenizer
        while len(_built) > _BUILT_MAX:
            _built.popitem(last=False)
    return tokenizer


def _build(vocab: dict[str, int], merges: Sequence[tuple[str, str]],
           pad_token: str) -> Tokenizer:
    """CLIP's tokenization pipeline (module docstring) over `vocab` and `merges`."""
    missing = [name for name, tok in (("BOS", BOS), ("EOS", EOS), ("pad_token", pad_token))
               if tok not in vocab]
    if missing:
        raise ValueError(f"the vocabulary has no id for {missing}; a CLIP vocabulary needs "
                         f"{BOS!r} and {EOS!r}, and pad_token={pad_token!r} must be in it")
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=list(merges), dropout=None,
                              continuing_subword_prefix="", end_of_word_suffix="</w>",
                              fuse_unk=False, unk_token=EOS))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tokenizer.decoder = decoders.ByteLevel()
    # special tokens found in a prompt map to their ids, as in transformers: a literal
    # "<|endoftext|>" is EOS, and with SD 2's pad token every "!" is its own token (id 0)
    tokenizer.add_special_tokens([AddedToken(tok, special=True)
                                  for tok in dict.fromkeys((BOS, EOS, pad_token))])
    return tokenizer


def _folder_vocab(root: Path) -> tuple[str, Callable[[], tuple[dict[str, int],
                                                                list[tuple[str, str]]]]] | None:
    """(a digest of the files, their parser) of a tokenizer folder's vocabulary: vocab.json +
    merges.txt, else tokenizer.json; None for neither."""
    if (root / "vocab.json").is_file() and (root / "merges.txt").is_file():
        vocab_text = (root / "vocab.json").read_bytes()
        merges_text = (root / "merges.txt").read_bytes()

        def parse() -> tuple[dict[str, int], list[tuple[str, str]]]:
            lines = merges_text.decode("utf-8").splitlines()
            return json.loads(vocab_text.decode("utf-8")), [
                (a, b) for a, b in (line.split() for line in lines
                                    if line and not line.startswith("#version"))]

        digest = hashlib.sha256(vocab_text)
        digest.update(b"\0merges\0" + merges_text)
        return "vocab+merges:" + digest.hexdigest(), parse
    if (root / "tokenizer.json").is_file():  # all transformers >= 5 saves
        text = (root / "tokenizer.json").read_bytes()
        return ("tokenizer.json:" + hashlib.sha256(text).hexdigest(),
                lambda: _tokenizer_json_bpe(text, root / "tokenizer.json"))
    return None


def _token_text(value: Any) -> str | None:
    """A special token from a HF config: a plain string or {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


def _tokenizer_json_bpe(text: bytes, path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of the BPE model in `text`, the `tokenizers` tokenizer.json at `path`
    (merges written as "a b" strings by older versions, as [a, b] pairs by newer ones)."""
    model = json.loads(text.decode("utf-8")).get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise ValueError(f"{path}: not a BPE tokenizer (model type {model.get('type')!r}); "
                         "a CLIP tokenizer folder needs a BPE tokenizer.json or vocab.json + "
                         "merges.txt")
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1))
              for m in model.get("merges", [])]
    return model["vocab"], merges  # type: ignore[return-value]


class CLIPTokenizer:
    """Text -> CLIP token ids. transformers equivalent: `CLIPTokenizer` with
    `padding="max_length", truncation=True, max_length=77`.

    `vocab`/`merges` default to the bundled CLIP vocabulary; `pad_token` is "<|endoftext|>" for
    SD 1.x and "!" (id 0) for SD 2.x, whose tokenizer config says so.
    """

    def __init__(self, vocab: dict[str, int] | None = None,
                 merges: Sequence[tuple[str, str]] | None = None, *,
                 pad_token: str = EOS, model_max_length: int = 77) -> None:
        if vocab is None or merges is None:
            built = _built_once(("bundled", pad_token),
                                lambda: _build(*bundled_vocab(), pad_token))
        else:
            built = _build(vocab, merges, pad_token)
        self._use(built, pad_token, model_max_length)

    def _use(self, tokenizer: Tokenizer, pad_token: str, model_max_length: int) -> None:
        self._tokenizer = tokenizer
        # ints: _build checked that the vocabulary has all three
        self.bos_token_id = cast(int, tokenizer.token_to_id(BOS))
        self.eos_token_id = cast(int, tokenizer.token_to_id(EOS))
        self.pad_token, self.pad_token_id = pad_token, cast(int, tokenizer.token_to_id(pad_token))
        self.model_max_length = model_max_length

    @classmethod
    def from_pretrained(cls, folder: str | Path | None = None) -> CLIPTokenizer:
        """The tokenizer of a diffusers model folder (or its `tokenizer/` subfolder).

        Uses the folder's vocab.json + merges.txt (else its tokenizer.json, which is all
        transformers 5 writes) and its special_tokens_map.json /
        tokenizer_config.json (pad token, model_max_length) when present; otherwise the bundled
        vocabulary (with the folder's pad token if it names one). `None`: bundled, SD 1.x padding.
        """
        settings: dict[str, Any] = {}
        source = None
        if folder is not None:
            root = Path(folder)
            if not root.is_dir():
                raise FileNotFoundError(f"tokenizer folder {root} does not exist")
            if (root / "tokenizer").is_dir():
                root = root / "tokenizer"
            for name in ("tokenizer_config.json", "special_tokens_map.json"):
                if (root / name).is_file():
                    settings.update(json.loads((root / name).read_text(encoding="utf-8")))
            source = _folder_vocab(root)
        options: dict[str, Any] = {}
        if _token_text(settings.get("pad_token")):
            options["pad_token"] = _token_text(settings["pad_token"])
        limit = settings.get("model_max_length")
        # transformers writes int(1e30) for "no limit"; CLIP's own limit (77) applies then
        if isinstance(limit, int) and 2 <= limit <= 1 << 16:
            options["model_max_length"] = limit
        if source is None:
            return cls(**options)
        digest, parse = source
        pad_token = options.get("pad_token", EOS)
        made = cls.__new__(cls)
        made._use(_built_once((digest, pad_token), lambda: _build(*parse(), pad_token)),
                  pad_token, options.get("model_max_length", 77))
        return made

    @property
    def vocab_size(self) -> int:
        """Number of token ids (49,408 for CLIP)."""
        return self._tokenizer.get_vocab_size()

    def encode(self, prompt: str) -> list[int]:
        """Token ids of `prompt` with BOS and EOS, not truncated (count tokens with it)."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        ids = self._tokenizer.encode(prompt, add_special_tokens=False).ids
        return [self.bos_token_id, *ids, self.eos_token_id]

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text without BOS/EOS, not truncated: the pieces a long or weighted
        prompt is chunked from. transformers: `tokenizer(texts, truncation=False,
        add_special_tokens=False).input_ids`."""
        texts = list(texts)
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"texts must be str, got {type(text).__name__}")
        return [e.ids for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]

    def token_id(self, token: str) -> int | None:
        """The id of a vocabulary entry (e.g. ",</w>", the comma ending a word), None if absent."""
        return self._tokenizer.token_to_id(token)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids, special tokens and padding dropped (words joined by spaces)."""
        text = self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)
        return text.replace("</w>", " ").strip()

    def __call__(self, prompts: str | Sequence[str], *, max_length: int | None = None,
                 padding: bool = True) -> np.ndarray:
        """Batch of prompts -> int32 ids of shape (B, max_length) for the text encoder.

        Each row is BOS, at most max_length - 2 tokens, EOS (kept when truncating), then pad
        tokens up to `max_length` (default `model_max_length`, 77); `padding=False` pads only
        to the longest row. transformers: `tokenizer(prompts, padding="max_length",
        truncation=True, max_length=77, return_tensors="np").input_ids`.
        """
        batch = [prompts] if isinstance(prompts, str) else list(prompts)
        max_length = self.model_max_length if max_length is None else max_length
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2 (BOS and EOS), got {max_length}")
        rows = []
        for prompt in batch:
            ids = self.encode(prompt)
            rows.append(ids if len(ids) <= max_length else [*ids[:max_length - 1], ids[-1]])
        width = max_length if padding else max((len(r) for r in rows), default=2)
        out = np.full((len(rows), width), self.pad_token_id, dtype=np.int32)
        for row, ids in zip(out, rows):
            row[:len(ids)] = ids
        return out
