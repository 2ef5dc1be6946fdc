"""Control models by name, as the ControlNet extension lists and finds them, and loaded by
their kind.

    folder = ControlModelDir("models/ControlNet")
    folder.titles()          # ["control_v11p_sd15_canny [d14c016b]", ...]
    entry = folder.find("control_v11p_sd15_canny")   # title, name (any case) or part of one
    model = load_control_model(entry.path, device=device)

A model is a file the extension lists (.safetensors, .pth, .pt, .ckpt, .bin, in subfolders
too) or a diffusers folder (config.json + weights), named by its stem (folder name) with the
WebUI's short hash in brackets (`sd_models.model_hash`: sha256 of the 64 KiB at 1 MiB, 8 hex
digits; a folder: its weights file's). Requests name models only by these names: a request
never becomes a path.

`load_control_model` reads what a path holds and dispatches on its kind (`model_kind`):
ControlNet, T2I-Adapter and IP-Adapter (without its image encoder: an IP-Adapter unit names
that apart, diffusion.server.catalog.image_encoders).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...process_shared import process_shared
from ..errors import WeightsError
from ..formats.torch_file import open_weights_file
from .controlnet_file import load_controlnet, load_t2i_adapter
from .ip_adapter_file import load_ip_adapter

__all__ = ["EXTENSIONS", "LOADERS", "ControlModelCache", "ControlModelDir", "ControlModelEntry",
           "load_control_model", "model_kind", "short_hash"]

EXTENSIONS = (".pt", ".pth", ".ckpt", ".safetensors", ".bin")  # the extension's CN_MODEL_EXTS
# kind -> loader(path, dtype=, device=); model_kind names the kind
LOADERS: dict[str, Callable[..., Any]] = {"controlnet": load_controlnet,
                                          "t2i_adapter": load_t2i_adapter,
                                          "ip_adapter": load_ip_adapter}
_CLASSES = {"ControlNetModel": "controlnet", "FluxControlNetModel": "controlnet",
            "SD3ControlNetModel": "controlnet", "ControlNetUnionModel": "controlnet",
            "ZImageControlNetModel": "controlnet", "QwenImageControlNetModel": "controlnet",
            "ControlNetModel_Union": "controlnet",  # xinsir's own name for its Union
            "T2IAdapter": "t2i_adapter",
            "MultiAdapter": "t2i_adapter"}


def _weights_file(folder: Path) -> Path | None:
    files = sorted(p for p in folder.iterdir() if p.suffix in EXTENSIONS and p.is_file())
    return files[0] if files else None


def short_hash(path: Path) -> str:
    """The WebUI's old model hash of a file (its folder's weights file for a folder)."""
    file = _weights_file(path) if path.is_dir() else path
    if file is None:
        return "NOFILE"
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        handle.seek(0x100000)
        digest.update(handle.read(0x10000))
    return digest.hexdigest()[:8]


def model_kind(path: str | os.PathLike[str]) -> str:
    """"controlnet", "t2i_adapter" or "ip_adapter": what the folder's config or the file's
    tensor names say; WeightsError when it is none of them."""
    path = Path(path)
    if path.is_dir():
        config = path / "config.json"
        if config.is_file():
            name = json.loads(config.read_text(encoding="utf-8")).get("_class_name", "")
            if name in _CLASSES:
                return _CLASSES[name]
        raise WeightsError(f"{path}: not a ControlNet or T2I-Adapter folder (its config.json "
                           "names no ControlNetModel or T2IAdapter)")
    if not path.is_file():
        raise WeightsError(f"{path}: no such control model file or folder")
    keys = open_weights_file(path).keys()
    if any(k.startswith(("image_proj.", "ip_adapter.")) for k in keys):
        return "ip_adapter"
    if any(k.startswith(("control_model.", "controlnet_", "input_hint_block.",
                         "control_all_x_embedder.")) for k in keys):
        return "controlnet"
    if any(k.startswith(("adapter.", "body.")) for k in keys):
        return "t2i_adapter"
    raise WeightsError(f"{path}: not a ControlNet, T2I-Adapter or IP-Adapter (none of their "
                       "tensor names)")


def load_control_model(path: str | os.PathLike[str], *, dtype: Any = np.float32,
                       device: Any = None, to_host: bool = False) -> Any:
    """The control model at `path`, loaded by its kind's loader; its `title` attribute is the
    name the infotext writes ("stem [hash]"). `to_host`: a ControlNet goes straight to host
    memory (load_controlnet), for a flow model's memory mode; other kinds load as usual."""
    path = Path(path)
    kind = model_kind(path)
    extra = {"to_host": True} if to_host and kind == "controlnet" else {}
    model = LOADERS[kind](path, dtype=dtype, device=device, **extra)
    model.title = f"{_stem(path)} [{short_hash(path)}]"
    return model


def _stem(path: Path) -> str:
    return path.name if path.is_dir() else path.stem


@dataclass(frozen=True)
class ControlModelEntry:
    path: Path
    name: str  # the stem, as the extension shows it
    hash: str

    @property
    def title(self) -> str:
        return f"{self.name} [{self.hash}]"


def _scan(root: Path) -> list[ControlModelEntry]:
    found: list[ControlModelEntry] = []
    for current, dirs, files in os.walk(root):
        here = Path(current)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if here != root and (here / "config.json").is_file():
            dirs.clear()  # a diffusers folder: one model, its files are not models
            found.append(ControlModelEntry(here, here.name, short_hash(here)))
            continue
        for name in sorted(files):
            path = here / name
            if path.suffix in EXTENSIONS and not name.startswith(".") and path.stem != "None":
                found.append(ControlModelEntry(path, path.stem, short_hash(path)))
    return sorted(found, key=lambda e: e.name)


class ControlModelDir:
    """The models of a folder (`--controlnet-dir`), rescanned by `refresh()`."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = None if root is None else Path(root)
        if self.root is not None and not self.root.is_dir():
            raise FileNotFoundError(f"--controlnet-dir {str(root)!r} is not a folder")
        self._lock = threading.Lock()
        self.entries: list[ControlModelEntry] = []
        self.refresh()

    def refresh(self) -> list[ControlModelEntry]:
        entries = [] if self.root is None else _scan(self.root)
        with self._lock:
            self.entries = entries
        return entries

    def titles(self) -> list[str]:
        with self._lock:
            return [e.title for e in self.entries]

    def find(self, text: str) -> ControlModelEntry | None:
        """The model `text` means, as the extension finds it: its title, its name in any
        case (the hash left out or another), else the shortest name containing it."""
        with self._lock:
            entries = list(self.entries)
        text = text.strip()
        for entry in entries:
            if entry.title == text:
                return entry
        wanted = text.rsplit(" [", 1)[0].lower() if text.endswith("]") else text.lower()
        by_name = {e.name.lower(): e for e in entries}
        if wanted in by_name:
            return by_name[wanted]
        partial = sorted((e for e in entries if wanted and wanted in e.name.lower()),
                         key=lambda e: len(e.name))
        return partial[0] if partial else None


class ControlModelCache:
    """Loaded control models by (path, device, dtype), the last `size` of each loader kept
    (the extension's control_net_model_cache_size; IP-Adapters' image encoders, loaded by
    another loader, are counted apart); thread-safe, one load at a time."""

    def __init__(self, size: int = 2) -> None:
        self.size = max(1, size)
        self._models: dict[Callable[..., Any], OrderedDict[tuple[Any, ...], Any]] = {}
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, ...]:
        # a job sent to a worker process (diffusion.server.jobs.processes) takes that process's own
        # cache along: the models stay on the GPU they were loaded on, and a lock never pickles
        return process_shared, (ControlModelCache, self.size)

    def clear(self) -> None:
        """Drop every model (their GPU memory goes once nothing else holds them)."""
        with self._lock:
            self._models.clear()

    def get(self, path: str | os.PathLike[str], *, dtype: Any, device: Any,
            loader: Callable[..., Any] = load_control_model) -> Any:
        """The model at `path` as `loader(path, dtype=, device=)` gives it, loaded once."""
        key = (str(Path(path).resolve()), id(device), np.dtype(dtype).str)
        with self._lock:
            models = self._models.setdefault(loader, OrderedDict())
            if key in models:
                models.move_to_end(key)
                return models[key]
            while len(models) >= self.size:
                models.popitem(last=False)
            model = loader(path, dtype=dtype, device=device)
            models[key] = model
            return model
