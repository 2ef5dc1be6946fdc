"""The models the server may load: found in `--models-dir`, plus `--model` / the bundled one.

Each has the WebUI's checkpoint identity: `title` ("name.safetensors [0123456789]"),
`model_name`, `sha256` and the short `hash` (its first 10 hex digits, as the WebUI's
`sd_models.model_hash`). A single file's sha256 is the file's. A diffusers folder has no file
to hash, so its sha256 is defined here as the sha256 of the lines `<relative path>\\t<sha256 of
the file>\\n` of every file in the folder (sorted by POSIX relative path, hidden files left out):
stable across copies and machines, changed by any edit of any file. Requests name models only
by title, name or hash, which are looked up in this list: a request never becomes a path.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from threading import Lock

__all__ = ["ModelEntry", "ModelRegistry", "file_sha256", "folder_sha256"]

_CHUNK = 1 << 20
_cache: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256
_cache_lock = Lock()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, remembered by (path, size, mtime) for this process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(_CHUNK):
            digest.update(block)
    with _cache_lock:
        _cache[key] = digest.hexdigest()
    return _cache[key]


def folder_sha256(folder: Path) -> str:
    """The folder hash described in the module docstring."""
    lines = []
    for path in sorted(folder.rglob("*"), key=lambda p: p.relative_to(folder).as_posix()):
        relative = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            lines.append(f"{relative.as_posix()}\t{file_sha256(path)}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


@dataclass(frozen=True)
class ModelEntry:
    path: Path
    name: str  # relative name as listed ("sub/model.safetensors", "tiny-sd")
    sha256: str

    @property
    def hash(self) -> str:
        return self.sha256[:10]

    @property
    def title(self) -> str:
        return f"{self.name} [{self.hash}]"

    @property
    def model_name(self) -> str:
        """The WebUI's model_name: the name without extension, path separators as '_'."""
        return re.sub(r"\.(safetensors|ckpt|gguf)$", "", self.name).replace("/", "_")

    def item(self) -> dict[str, str | None]:
        return {"title": self.title, "model_name": self.model_name, "hash": self.hash,
                "sha256": self.sha256, "filename": str(self.path), "config": None}


def _is_model_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file()


def _entry(path: Path, name: str) -> ModelEntry:
    sha = folder_sha256(path) if path.is_dir() else file_sha256(path)
    return ModelEntry(path=path.resolve(), name=name, sha256=sha)


def _scan(root: Path) -> list[ModelEntry]:
    """diffusers folders, .safetensors, .ckpt and .gguf files under `root` (Forge's checkpoint
    suffixes: city96's FLUX / SD 3.5 GGUFs; a .ckpt is read without running its pickle)."""
    found: list[ModelEntry] = []
    for current, dirs, files in os.walk(root):
        here = Path(current)
        dirs.sort()
        for name in list(dirs):
            if name.startswith("."):
                dirs.remove(name)
            elif _is_model_folder(here / name):
                dirs.remove(name)  # a model's own subfolders hold components, not models
                found.append(_entry(here / name, (here / name).relative_to(root).as_posix()))
        for name in sorted(files):
            if name.lower().endswith((".safetensors", ".ckpt", ".gguf")) and \
                    not name.startswith("."):
                found.append(_entry(here / name, (here / name).relative_to(root).as_posix()))
    return found


class ModelRegistry:
    """The list behind /sdapi/v1/sd-models; `refresh()` rescans the models folder."""

    def __init__(self, *, models_dir: str | os.PathLike[str] | None = None,
                 extra: str | os.PathLike[str] | None = None) -> None:
        self.models_dir = None if models_dir is None else Path(models_dir)
        self.extra = None if extra is None else Path(extra)
        self._lock = Lock()
        self.entries: list[ModelEntry] = []
        self.refresh()

    def refresh(self) -> list[ModelEntry]:
        entries = []
        if self.extra is not None:
            name = self.extra.name
            entries.append(_entry(self.extra, name))
        if self.models_dir is not None and self.models_dir.is_dir():
            known = {e.path for e in entries}
            entries += [e for e in _scan(self.models_dir) if e.path not in known]
        with self._lock:
            self.entries = entries
        return entries

    def find(self, name: str) -> ModelEntry | None:
        """The entry a client means by `name`: its title, name, model_name or short hash."""
        with self._lock:
            entries = list(self.entries)
        text = name.strip()
        for key in ("title", "name", "model_name", "hash", "sha256"):
            for entry in entries:
                if getattr(entry, key) == text:
                    return entry
        return None

    def entry_for(self, path: Path) -> ModelEntry | None:
        with self._lock:
            return next((e for e in self.entries if e.path == path.resolve()), None)

    def titles(self) -> list[str]:
        with self._lock:
            return [e.title for e in self.entries]
