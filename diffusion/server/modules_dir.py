"""Forge's `forge_additional_modules` as a client sends it (in POST /sdapi/v1/options or a
request's `override_settings`) -> the module files a model loads with.

Forge matches each value by its file name against its VAE / Text Encoder list, so a client
may send the names /sdapi/v1/sd-modules lists or the full paths /sdapi/v1/options gives back
(even another machine's: only the file name counts). Here a value may also be a path inside
`--models-dir` to a module file not yet listed. Nothing else becomes a path: a value that
names no listed file and no module file inside the models folder is refused, saying what to
do. Forge drops the names it does not know; here they are an error (HTTP 422), so that a
picture is never made with other modules than the ones asked for.
"""

from __future__ import annotations

from pathlib import Path, PureWindowsPath
from typing import Any

from ..loaders.module_file import module_roles
from .models_dir import ModelRegistry

__all__ = ["ModuleChoiceError", "choose_modules"]

_LISTED = "GET /sdapi/v1/sd-modules lists them"
_ADD = ("put the file in --models-dir and POST /sdapi/v1/refresh-checkpoints, then name it "
        "as /sdapi/v1/sd-modules lists it")


class ModuleChoiceError(ValueError):
    """A `forge_additional_modules` value this server cannot load; the message says why."""


def _file_name(value: str) -> str:
    """The file name of a path written with / or \\ (Forge's clients on Windows send these)."""
    return PureWindowsPath(value).name


def _inside(registry: ModelRegistry, value: str) -> Path | None:
    """The file `value` names inside the models folder (absolute, or relative to it), None
    when it names none there."""
    root = registry.models_dir
    if root is None:
        return None
    try:  # ValueError: a NUL in the name
        path = (Path(value) if Path(value).is_absolute() else root / value).resolve()
        return path if path.is_relative_to(root.resolve()) and path.is_file() else None
    except (OSError, RuntimeError, ValueError):
        return None


def choose_modules(value: Any, registry: ModelRegistry,
                   current: tuple[Path, ...] = ()) -> tuple[Path, ...]:
    """The module files `value` (a list of names or paths, module docstring) names, in its
    order; `current` itself when they are the same files in another order (Forge reloads
    nothing then). ModuleChoiceError saying what is wrong and what to send."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ModuleChoiceError(
            "forge_additional_modules must be a list of module file names, as "
            f"/sdapi/v1/sd-modules lists them (e.g. [\"ae.safetensors\"]), got {value!r}")
    chosen: list[Path] = []
    for text in value:
        path = _find(registry, text.strip())
        if path not in chosen:
            chosen.append(path)
    return current if sorted(chosen) == sorted(current) else tuple(chosen)


def _find(registry: ModelRegistry, text: str) -> Path:
    modules = registry.modules
    # 1. a listed file: by its name in the folder, its path, then its file name (as Forge)
    for match in (lambda m: m.name == text, lambda m: str(m.path) == text,
                  lambda m: m.path.name == _file_name(text)):
        if (found := next((m for m in modules if match(m)), None)) is not None:
            return found.path
    # 2. a module file in the models folder that the last scan did not see
    inside = _inside(registry, text) if text else None
    if inside is not None:
        try:
            module_roles(inside)
        except (ValueError, OSError) as exc:  # WeightsError is a ValueError
            raise ModuleChoiceError(f"forge_additional_modules {text!r}: {exc}") from None
        return inside
    # 3. a model named as a module, a path outside the models folder, or an unknown name
    if registry.find(text) is not None or registry.find(_file_name(text)) is not None:
        raise ModuleChoiceError(
            f"forge_additional_modules {text!r} is a model (GET /sdapi/v1/sd-models lists "
            "it), not a VAE or text encoder: choose it with sd_model_checkpoint, and name "
            f"module files here ({_LISTED})")
    names = ", ".join(m.path.name for m in modules) or "none"
    where = ("is not a file inside this server's models folder"
             if Path(text).is_absolute() or "/" in text or "\\" in text
             else "is not one of this server's module files")
    raise ModuleChoiceError(f"forge_additional_modules {text!r} {where} ({names}; {_LISTED}); "
                            f"{_ADD}")
