"""Textual-inversion embeddings found by file name, as the WebUI finds them.

The WebUI's `EmbeddingDatabase` (`modules/textual_inversion/textual_inversion.py`): every file
under the embeddings directory (subfolders too) is an embedding named after its file stem; a
prompt uses it by containing that name. The name is matched on token ids (so case and spacing
are the tokenizer's business), longest name first, and its vectors take the name's place in
the prompt (`conditioning.prompt_chunks` lays out the placeholders, the text encoder's
`embeddings=` puts the vectors in).

    database = EmbeddingDatabase("embeddings")
    lookup = database.lookup(tokenizer, width=768)      # one per text encoder (SDXL: two)
    encode(tokenizer, text_encoder, prompt, steps=20, embeddings=lookup)
    ti_hashes(lookup.used.values())                      # infotext "TI hashes"

Files: `.safetensors`, or `.pt`/`.bin` pickles (read without running them: a global outside the
tensor allowlist is refused), holding one tensor of (n, D) or (D,) vectors (the WebUI's
`emb_params`, a textual-inversion `.pt`'s `string_to_param.*`, or diffusers' `{token: vectors}`),
or SDXL's `clip_l` (n, 768) and `clip_g` (n, 1280). Contents are read only when a prompt uses
the name, once per file.

Where this differs from the WebUI: an embedding of the wrong width for the model is an error
naming the file (the WebUI skips it and leaves its name as plain text); a name two files share
is an error (the WebUI keeps whichever it read last), except that a `.safetensors` file is
preferred to a pickle one of the same name; embeddings stored in PNG/WebP images are not read.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..loaders import SafetensorsFile, WeightsError
from ..loaders.formats.torch_file import TorchFile, open_weights_file
from .conditioning import CHUNK_LENGTH
from .tokenizer import CLIPTokenizer

__all__ = ["ENCODER_KEYS", "Embedding", "EmbeddingDatabase", "EmbeddingFile", "EmbeddingFinder",
           "EncoderFinders", "ti_hashes"]

ENCODER_KEYS = ("clip_l", "clip_g")  # SDXL files: vectors for CLIP-L and for OpenCLIP-G
_SAFE_SUFFIX = ".safetensors"
_PICKLE_SUFFIXES = (".pt", ".bin")  # what the WebUI loads with torch.load
_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
_FAMILIES = {768: "SD 1.x", 1024: "SD 2.x"}


class EmbeddingFile:
    """One file of the embeddings directory: its `name` (the file stem) and `path`; `tensors`
    reads it on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.stem

    def __repr__(self) -> str:
        return f"EmbeddingFile({str(self.path)!r})"

    @property
    def is_pickle(self) -> bool:
        return self.path.suffix.lower() in _PICKLE_SUFFIXES

    @cached_property
    def tensors(self) -> dict[str, np.ndarray]:
        """float32 (n, D) vectors: {"": vectors} for SD 1.x/2.x files, {"clip_l": ...,
        "clip_g": ...} for SDXL ones. A pickle (.pt/.bin) is read without running it
        (`loaders.TorchFile`). Raises WeightsError for a pickle naming a global outside the
        tensor allowlist, or a file that is not a textual-inversion embedding."""
        file = open_weights_file(self.path)
        keys = file.keys()
        if all(key in keys for key in ENCODER_KEYS):
            tensors = {key: _vectors(file, key) for key in ENCODER_KEYS}
            counts = {key: len(v) for key, v in tensors.items()}
            if len(set(counts.values())) != 1:
                raise WeightsError(f"{self.path}: clip_l and clip_g hold different numbers of "
                                   f"vectors {counts}; the file is damaged, re-download it")
            return tensors
        return {"": _vectors(file, _embedding_key(file))}

    @cached_property
    def sha256(self) -> str:
        """sha256 of the whole file, hex (the WebUI's embedding `hash`)."""
        digest = hashlib.sha256()
        with open(self.path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    @property
    def shorthash(self) -> str:
        """The first 12 hex digits of `sha256`: what the infotext's "TI hashes" shows."""
        return self.sha256[:12]


def _embedding_key(file: SafetensorsFile | TorchFile) -> str:
    """The one tensor of a single-encoder file: "emb_params" (the WebUI's safetensors), a
    flattened "string_to_param.*", or the only tensor there is (diffusers' token name)."""
    keys = file.keys()
    if "emb_params" in keys:
        return "emb_params"
    params = [key for key in keys if key.startswith("string_to_param.")]
    candidates = params or keys
    if len(candidates) != 1:
        raise WeightsError(
            f"{file.path}: not a textual-inversion embedding: it holds tensors {keys[:8]}; an "
            "embedding holds one tensor of vectors ('emb_params' or a token name), or "
            "'clip_l' and 'clip_g' for SDXL. Move the file out of the embeddings directory")
    return candidates[0]


def _vectors(file: SafetensorsFile | TorchFile, key: str) -> np.ndarray:
    """Tensor `key` as float32 (n, D) vectors, checked: floats, 1 or 2 axes, 1..75 vectors."""
    shape = file.shape(key)
    if file.dtype(key) not in _FLOAT_DTYPES or len(shape) not in (1, 2) or 0 in shape:
        raise WeightsError(f"{file.path}: tensor {key!r} is {file.dtype(key)} of shape "
                           f"{list(shape)}; embedding vectors are floats of shape (vectors, "
                           "width) or (width,). The file is not a textual-inversion embedding")
    vectors = file.read(key).astype(np.float32).reshape(-1, shape[-1])
    if len(vectors) > CHUNK_LENGTH:
        raise WeightsError(f"{file.path}: {len(vectors)} vectors do not fit in one "
                           f"{CHUNK_LENGTH}-token prompt chunk; use an embedding with fewer")
    return vectors




@dataclass(frozen=True, eq=False)
class Embedding:
    """What a lookup finds: the `vectors` (n, D) float32 of one file for one text encoder."""

    name: str
    vectors: np.ndarray
    file: EmbeddingFile

    @property
    def shorthash(self) -> str:
        return self.file.shorthash


class EmbeddingDatabase:
    """The embedding files under `directory` (subfolders included), by name.

    Listing the files is cheap and redone by each `lookup` (as the WebUI rescans when the
    folder changes); a file's contents are read when a prompt first uses it and kept while the
    file is unchanged.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            problem = "is a file" if self.directory.exists() else "does not exist"
            raise FileNotFoundError(f"embeddings directory {self.directory} {problem}; create "
                                    "it or point --embeddings-dir at your embeddings")
        self._known: dict[tuple[Path, int, int], EmbeddingFile] = {}
        self.files: list[EmbeddingFile] = []
        self.refresh()

    def refresh(self) -> None:
        """List the directory again; files unchanged (path, size, mtime) keep what was read."""
        known, files = {}, []
        for root, folders, names in os.walk(self.directory, followlinks=True):
            folders.sort()
            for filename in sorted(names):
                path = Path(root, filename)
                if path.suffix.lower() not in (_SAFE_SUFFIX, *_PICKLE_SUFFIXES):
                    continue
                try:
                    stat = path.stat()
                except OSError:  # a dangling link, or a file removed since the walk listed it
                    continue
                if stat.st_size == 0:  # the WebUI skips empty files too
                    continue
                key = (path, stat.st_size, stat.st_mtime_ns)
                known[key] = self._known.get(key) or EmbeddingFile(path)
                files.append(known[key])
        self._known, self.files = known, files

    @property
    def names(self) -> list[str]:
        """Embedding names, as the WebUI lists them (sorted, case-insensitively)."""
        return sorted({file.name for file in self.files}, key=str.lower)

    def lookup(self, tokenizer: CLIPTokenizer, *, width: int,
               encoder: str | None = None) -> EmbeddingFinder:
        """A `conditioning.EmbeddingLookup` for a text encoder of hidden size `width` with this
        `tokenizer`. `encoder` is "clip_l" or "clip_g" for SDXL's two encoders (which vectors
        of an SDXL file to use), None for a one-encoder model."""
        if encoder is not None and encoder not in ENCODER_KEYS:
            raise ValueError(f"encoder must be None or one of {list(ENCODER_KEYS)}, got "
                             f"{encoder!r}")
        self.refresh()
        return EmbeddingFinder(self.files, tokenizer, width=width, encoder=encoder)


class EmbeddingFinder:
    """Finds embedding names in token ids (the WebUI's `find_embedding_at_position`) and gives
    each one's vectors for one text encoder. `used` collects what was found, by name, in
    order; clear it between prompts whose "TI hashes" are written separately."""

    def __init__(self, files: Sequence[EmbeddingFile], tokenizer: CLIPTokenizer, *, width: int,
                 encoder: str | None) -> None:
        self.width, self.encoder = width, encoder
        self.used: dict[str, Embedding] = {}
        self._found: dict[tuple[int, ...], Embedding] = {}
        by_ids: dict[tuple[int, ...], list[EmbeddingFile]] = {}
        for file, ids in zip(files, tokenizer.tokenize([f.name for f in files])):
            if ids:
                by_ids.setdefault(tuple(ids), []).append(file)
        # per first token, the names starting with it, longest first (the longest match wins)
        self._starts: dict[int, list[tuple[tuple[int, ...], list[EmbeddingFile]]]] = {}
        for name_ids in sorted(by_ids, key=len, reverse=True):
            self._starts.setdefault(name_ids[0], []).append((name_ids, by_ids[name_ids]))

    def find(self, tokens: Sequence[int], position: int) -> tuple[Embedding, int] | None:
        """(embedding, tokens its name spans) if a name starts at `position`, else None."""
        for ids, files in self._starts.get(tokens[position], ()):
            if tuple(tokens[position:position + len(ids)]) == ids:
                if ids not in self._found:
                    self._found[ids] = self._embedding(files)
                embedding = self._found[ids]
                self.used[embedding.name] = embedding
                return embedding, len(ids)
        return None

    def _embedding(self, files: list[EmbeddingFile]) -> Embedding:
        """The one usable file of a name, read and checked against this text encoder."""
        safe = [file for file in files if not file.is_pickle] or files
        if len(safe) > 1:
            raise WeightsError(f"embedding name {safe[0].name!r} matches several files: "
                               f"{[str(f.path) for f in safe]}; rename or remove all but one")
        file = safe[0]
        return Embedding(file.name, self._vectors_for_encoder(file), file)

    def _vectors_for_encoder(self, file: EmbeddingFile) -> np.ndarray:
        tensors = file.tensors
        if self.encoder is None and "" not in tensors:
            raise WeightsError(f"{file.path}: embedding {file.name!r} is for SDXL (clip_l and "
                               f"clip_g vectors); this model has one text encoder. Use an "
                               "embedding made for this model")
        if self.encoder is not None and "" in tensors:
            raise WeightsError(f"{file.path}: embedding {file.name!r} is for a model with one "
                               f"text encoder ({_describe(tensors[''].shape[1])}); SDXL needs "
                               "clip_l and clip_g vectors. Use an SDXL embedding")
        vectors = tensors[self.encoder or ""]
        if vectors.shape[1] != self.width:
            where = f" ({self.encoder})" if self.encoder else ""
            raise WeightsError(f"{file.path}: embedding {file.name!r} has {vectors.shape[1]}-wide "
                               f"vectors{where}, but this model's text encoder takes "
                               f"{_describe(self.width)}; use an embedding made for this model")
        return vectors


class EncoderFinders:
    """SDXL's textual inversion: an EmbeddingFinder per text encoder, by the key of its vectors
    in an SDXL file ("clip_l": CLIP-L's, "clip_g": OpenCLIP-G's, which the refiner reads too).
    Each finds the same names in its own tokenizer's ids (the files hold as many vectors under
    both keys, so the two encoders' chunks stay aligned) and gives its own vectors: the WebUI's
    SDXL embedders, each reading `vec[its key]`. `used`: what they found, by name, in order."""

    def __init__(self, finders: Mapping[str, EmbeddingFinder]) -> None:
        unknown = set(finders) - set(ENCODER_KEYS)
        if unknown:
            raise ValueError(f"encoder keys must be among {list(ENCODER_KEYS)}, got "
                             f"{sorted(unknown)}")
        self.finders = dict(finders)

    def __getitem__(self, key: str) -> EmbeddingFinder:
        return self.finders[key]

    @property
    def used(self) -> dict[str, Embedding]:
        used: dict[str, Embedding] = {}
        for finder in self.finders.values():
            for name, embedding in finder.used.items():
                used.setdefault(name, embedding)
        return used


def _describe(width: int) -> str:
    family = _FAMILIES.get(width)
    return f"{width}-wide vectors, {family}" if family else f"{width}-wide vectors"


def ti_hashes(embeddings: Iterable[Embedding], previous: str = "") -> str:
    """The infotext's "TI hashes" value: "name: shorthash, ..." (':' and ',' dropped from
    names), then `previous` (the WebUI appends the value its earlier encodes wrote: the
    negative prompt is encoded first, so its names come last)."""
    parts = [f"{e.name.replace(':', '').replace(',', '')}: {e.shorthash}" for e in embeddings]
    return ", ".join([*parts, previous] if previous else parts)
