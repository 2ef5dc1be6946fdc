"""Finding a LoRA file by the name a prompt gives it."""

from __future__ import annotations

import os
from pathlib import Path

from ..loaders import SafetensorsFile, WeightsError
from ..loaders.errors import PICKLE_SUFFIXES
from ._errors import LoraError

__all__ = ["find_lora"]

_LISTED = 20  # names listed when a LoRA is not found


def _check_name(name: str) -> None:
    """A LoRA name is a file name without its extension, never a path."""
    if (not isinstance(name, str) or not name.strip() or ".." in name
            or any(c in name for c in "/\\\0")):
        raise LoraError(f"LoRA name {name!r} is not a file name: names may not be empty or "
                        "contain '/', '\\' or '..'; put the file in the LoRA folder and use "
                        "its name without .safetensors")


def _by_alias(name: str, files: list[Path]) -> list[Path]:
    """The files whose kohya metadata names them `name` (`ss_output_name`): the WebUI's
    "alias from file", which its LoRA cards write into prompts by default."""
    found = []
    for path in files:
        try:
            if SafetensorsFile(path).metadata.get("ss_output_name") == name:
                found.append(path)
        except WeightsError:
            continue  # a damaged file names nothing; loading it by its own name says why
    return found


def find_lora(name: str, lora_dir: str | os.PathLike[str]) -> Path:
    """The file `<lora:NAME:...>` means: `lora_dir/NAME.safetensors`, else the one
    `NAME.safetensors` in a subfolder (the WebUI searches its Lora folder recursively too),
    else the one file whose metadata alias (`ss_output_name`) is NAME, as the WebUI's cards
    write tags by default.

    Raises LoraError for a name that is a path (contains '/', '\\' or '..'), a missing folder,
    a name two files share, or no such file (listing the names that are there).
    """
    _check_name(name)
    folder = Path(lora_dir)
    if not folder.is_dir():
        raise LoraError(f"LoRA folder {folder} does not exist; create it and put "
                        f"{name}.safetensors there (or pass the folder you use)")
    direct = folder / f"{name}.safetensors"
    if direct.is_file():
        return direct
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    loras = [p for p in files if p.suffix.lower() == ".safetensors"]
    found = [p for p in loras if p.stem == name] or _by_alias(name, loras)
    if len(found) == 1:
        return found[0]
    if found:
        raise LoraError(f"LoRA name {name!r} is ambiguous in {folder}: "
                        f"{', '.join(str(p.relative_to(folder)) for p in found)}; rename one")
    pickles = [p for p in files if p.stem == name and p.suffix.lower() in PICKLE_SUFFIXES]
    if len(pickles) == 1:  # an older .pt LoRA, read without running its pickle
        return pickles[0]
    if pickles:
        raise LoraError(f"LoRA name {name!r} is ambiguous in {folder}: "
                        f"{', '.join(str(p.relative_to(folder)) for p in pickles)}; rename one")
    names = sorted({p.stem for p in loras})
    listed = ", ".join(names[:_LISTED]) + (", ..." if len(names) > _LISTED else "")
    raise LoraError(f"no LoRA named {name!r} in {folder} (there: {listed or 'none'})")
