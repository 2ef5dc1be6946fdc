"""The models the server may load: found in `--models-dir`, plus `--model` / the bundled one.

Each has the WebUI's checkpoint identity: `title` ("name.safetensors [0123456789]"),
`model_name`, `sha256` and the short `hash` (its first 10 hex digits, as the WebUI's
`sd_models.model_hash`). A single file's sha256 is the file's. A diffusers folder has no file
to hash, so its sha256 is defined here as the sha256 of the lines `<relative path>\\t<sha256 of
the file>\\n` of every file in the folder (sorted by POSIX relative path, hidden files left out):
stable across copies and machines, changed by any edit of any file. Requests name models only
by title, name or hash, which are looked up in this list: a request never becomes a path.

The same scan finds Forge's module files (diffusion.loaders.flow.module_file: VAEs and text
encoders, which Forge keeps in models/VAE and models/text_encoder): they are listed apart, by
/sdapi/v1/sd-modules, and not as models; `serve --text-encoder` files are listed with them.

A single-file transformer of a family that takes the rest from a diffusers folder (Z-Image,
Qwen-Image (2.1), FLUX.2, Kandinsky 5, Krea 2, Lumina 2: ComfyUI's models/diffusion_models files
and GGUFs) is listed with the folder it loads with (`ModelEntry.base`,
diffusion.pipelines.bases): the first of `serve --base`'s folders, then of the models folder's
diffusers folders, of its family. Without one it is still listed, with `ModelEntry.lacks`
saying which folder to add where.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from threading import Lock

from ...loaders.flow.module_file import MODULE_SUFFIXES, module_roles
from ...pipelines.bases import base_family, find_base

__all__ = ["ModelEntry", "ModelRegistry", "ModuleEntry", "file_sha256", "folder_sha256"]

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
    # the module files it loads with (Forge's forge_additional_modules, resolved paths)
    modules: tuple[Path, ...] = ()
    # the VAE file the WebUI's sd_vae option chose (modules_dir.choose_vae, beside this),
    # loaded after the modules, so in place of a VAE among them; None: no file chosen
    vae: Path | None = None
    # a single-file transformer's diffusers folder giving the rest (module docstring); when it
    # needs one and none was found, `lacks` says in one line which folder to add where
    base: Path | None = None
    lacks: str | None = None

    @property
    def identity(self) -> tuple[Path, tuple[Path, ...]]:
        """What a loaded model is kept by: its path and the module files it loads with."""
        return self.path, self.files

    def loads_as(self, path: Path) -> bool:
        """Whether `path` loaded alone, as a refiner loads (no module files, no base), is
        this model: its file, the model loaded without module files or a base."""
        return (not self.files and self.base is None
                and self.path.resolve() == Path(path).resolve())

    @property
    def files(self) -> tuple[Path, ...]:
        """The module files the model loads with, in order: `modules`, then `vae`."""
        if self.vae is None:
            return self.modules
        return (*(path for path in self.modules if path != self.vae), self.vae)

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


@dataclass(frozen=True)
class ModuleEntry:
    """A VAE / text encoder file a model may load with (Forge's "VAE / Text Encoder" list)."""

    path: Path
    name: str  # relative name in its folder ("VAE/ae.safetensors"); Forge lists the file name
    roles: tuple[str, ...]  # module_roles: "vae", "clip_l", "clip_g", "t5"

    def item(self) -> dict[str, str]:
        """As Forge's /sdapi/v1/sd-modules (and, for a VAE, the WebUI's /sdapi/v1/sd-vae)
        lists it: the file name and its full path."""
        return {"model_name": self.path.name, "filename": str(self.path)}


def _module(path: Path, name: str) -> ModuleEntry | None:
    """`path` as a module entry, None when it is no module file (a model, or unreadable)."""
    if not path.name.lower().endswith(MODULE_SUFFIXES):
        return None
    try:
        return ModuleEntry(path=path.resolve(), name=name, roles=module_roles(path))
    except Exception:  # WeightsError, OSError, or a header no reader expects: listed as a
        return None    # model, as before, and its load says what is wrong with it


def _is_model_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file()


def _entry(path: Path, name: str) -> ModelEntry:
    sha = folder_sha256(path) if path.is_dir() else file_sha256(path)
    return ModelEntry(path=path.resolve(), name=name, sha256=sha)


def _scan(root: Path) -> tuple[list[ModelEntry], list[ModuleEntry]]:
    """diffusers folders, .safetensors, .ckpt and .gguf files under `root` (Forge's checkpoint
    suffixes: city96's FLUX / SD 3.5 GGUFs; a .ckpt is read without running its pickle), and
    apart from them the module files (VAEs, text encoders)."""
    found: list[ModelEntry] = []
    modules: list[ModuleEntry] = []
    for current, dirs, files in os.walk(root):
        here = Path(current)
        dirs.sort()
        for name in list(dirs):
            if name.startswith(".") or name == "VAE-approx":  # the latter: TAESD's decoders
                dirs.remove(name)  # for live previews (diffusion.server.previews), no models
            elif _is_model_folder(here / name):
                dirs.remove(name)  # a model's own subfolders hold components, not models
                found.append(_entry(here / name, (here / name).relative_to(root).as_posix()))
        for name in sorted(files):
            if name.lower().endswith((".safetensors", ".ckpt", ".gguf")) and \
                    not name.startswith("."):
                relative = (here / name).relative_to(root).as_posix()
                if (module := _module(here / name, relative)) is not None:
                    modules.append(module)
                else:
                    found.append(_entry(here / name, relative))
    return found, modules


def _with_base(entry: ModelEntry, folders: list[Path]) -> ModelEntry:
    """`entry` with the diffusers folder its single file loads with (module docstring), or
    with what it lacks."""
    wanted = base_family(entry.path)
    if wanted is None:
        return entry
    base = find_base(entry.path, folders)
    if base is not None:
        return replace(entry, base=base.resolve())
    models, family = wanted
    return replace(entry, lacks=(
        f"{entry.name} is a {models} transformer alone and this server has no {family} "
        "diffusers folder for its text encoder, tokenizer, VAE and scheduler: put one (with "
        "its model_index.json) in --models-dir and POST /sdapi/v1/refresh-checkpoints, or "
        "start serve with --base FOLDER"))


class ModelRegistry:
    """The list behind /sdapi/v1/sd-models; `refresh()` rescans the models folder."""

    def __init__(self, *, models_dir: str | os.PathLike[str] | None = None,
                 extra: str | os.PathLike[str] | None = None,
                 extra_modules: Sequence[str | os.PathLike[str]] = (),
                 bases: Sequence[str | os.PathLike[str]] = ()) -> None:
        self.models_dir = None if models_dir is None else Path(models_dir)
        self.extra = None if extra is None else Path(extra)
        self.extra_modules = [Path(m) for m in extra_modules]  # --text-encoder's files
        self.bases = [Path(b) for b in bases]  # --base's folders
        self._lock = Lock()
        self.entries: list[ModelEntry] = []
        self.modules: list[ModuleEntry] = []  # /sdapi/v1/sd-modules
        self.refresh()

    def refresh(self) -> list[ModelEntry]:
        """Scan the models folder again (the module files too)."""
        entries, modules = [], []
        if self.extra is not None:
            name = self.extra.name
            entries.append(_entry(self.extra, name))
        for file in self.extra_modules:
            module = _module(file, file.name)
            modules.append(module or ModuleEntry(path=file.resolve(), name=file.name, roles=()))
        if self.models_dir is not None and self.models_dir.is_dir():
            known = {e.path for e in entries}
            found, more = _scan(self.models_dir)
            entries += [e for e in found if e.path not in known]
            known_modules = {m.path for m in modules}
            modules += [m for m in more if m.path not in known_modules]
        folders = [*self.bases, *(e.path for e in entries if e.path.is_dir())]
        entries = [_with_base(entry, folders) for entry in entries]
        with self._lock:
            self.entries, self.modules = entries, modules
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

    def vaes(self) -> list[ModuleEntry]:
        """The module files holding a VAE: the WebUI's VAE list (/sdapi/v1/sd-vae)."""
        with self._lock:
            return [m for m in self.modules if "vae" in m.roles]

    def titles(self) -> list[str]:
        with self._lock:
            return [e.title for e in self.entries]
