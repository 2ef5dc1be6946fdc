"""Forge's `forge_additional_modules` and `hr_additional_modules`, and the WebUI's `sd_vae`, as
a client sends them (in POST /sdapi/v1/options, a request's `override_settings`, a txt2img
body) -> the module files a model loads with.

Forge matches each value by its file name against its VAE / Text Encoder list, so a client
may send the names /sdapi/v1/sd-modules lists or the full paths /sdapi/v1/options gives back
(even another machine's: only the file name counts). Here a value may also be a path inside
`--models-dir` to a module file not yet listed. Nothing else becomes a path: a value that
names no listed file and no module file inside the models folder is refused, saying what to
do. Forge drops the names it does not know; here they are an error (HTTP 422), so that a
picture is never made with other modules than the ones asked for.

`sd_vae` (the WebUI's "SD VAE" setting) names one VAE file of /sdapi/v1/sd-vae's list (the
module files holding a VAE), loaded after the Forge modules, so in place of any VAE among
them; or "Automatic": the VAE file named like the checkpoint ("NAME.vae.safetensors" or
"NAME.safetensors" for the model NAME.safetensors or folder NAME), else none; or "None": none.
With no file chosen the model runs with its own VAE (or a Forge module's). The WebUI 1.6+
takes for "Automatic" any VAE whose name merely starts with NAME; here the name must be NAME's,
so that a model "sd" does not take "sdxl_vae.safetensors".
"""

from __future__ import annotations

from pathlib import Path, PureWindowsPath
from typing import Any

from ...loaders.flow.module_file import module_roles, vae_latent_channels
from ...pipelines.families import family_of
from .models_dir import ModelEntry, ModelRegistry

__all__ = [
    "AUTOMATIC_VAE",
    "SAME_CHOICES",
    "ModuleChoiceError",
    "choose_hires_modules",
    "choose_modules",
    "choose_vae",
]

AUTOMATIC_VAE = "Automatic"  # the WebUI's default sd_vae ("auto": its older configs' spelling)
SAME_CHOICES = "Use same choices"  # Forge's hr_additional_modules default: the first pass's
_MODULES = ("GET /sdapi/v1/sd-modules lists them", "/sdapi/v1/sd-modules")
_VAES = ("GET /sdapi/v1/sd-vae lists them", "/sdapi/v1/sd-vae")


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
        path = _find(registry, text.strip(), "forge_additional_modules")
        if path not in chosen:
            chosen.append(path)
    return current if sorted(chosen) == sorted(current) else tuple(chosen)


def choose_hires_modules(value: Any, registry: ModelRegistry
                         ) -> tuple[tuple[str, ...], tuple[Path, ...] | None]:
    """Forge's `hr_additional_modules` (a txt2img body's, with the hires fix) -> (the labels
    Forge's infotext writes them under as "Hires Module N", the module files the hires pass
    runs with); the files are None for the first pass's ([\"Use same choices\"], Forge's
    default, or the field left out). [] is "Built-in": the model's own parts."""
    if value is None:
        return (), None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ModuleChoiceError(
            "hr_additional_modules must be a list of module file names, as /sdapi/v1/sd-modules "
            f"lists them, or [\"{SAME_CHOICES}\"] (the first pass's), got {value!r}")
    if SAME_CHOICES in value:
        return (SAME_CHOICES,), None
    if not value:
        return ("Built-in",), ()
    files: list[Path] = []
    for text in value:
        path = _find(registry, text.strip(), "hr_additional_modules")
        if path not in files:
            files.append(path)
    return tuple(path.stem for path in files), tuple(files)


def choose_vae(value: Any, registry: ModelRegistry, model: ModelEntry,
               setting: str = "sd_vae") -> Path | None:
    """The VAE file the WebUI's `sd_vae` value names for `model` (module docstring), None for
    the model's own. ModuleChoiceError naming `setting` and what to send."""
    if not isinstance(value, str):
        raise ModuleChoiceError(f"{setting} must be \"{AUTOMATIC_VAE}\", \"None\" or a VAE "
                                f"file name as /sdapi/v1/sd-vae lists it, got {value!r}")
    text = value.strip()
    takes = _latent_channels(model)
    if text in (AUTOMATIC_VAE, "auto"):
        stem = model.path.name.rsplit(".", 1)[0] if model.path.is_file() else model.path.name
        return next((m.path for m in registry.vaes()
                     if m.path.name.rsplit(".", 1)[0].removesuffix(".vae") == stem
                     and vae_latent_channels(m.path) in (takes, None)), None)
    if text == "None":
        return None
    path = _find(registry, text, setting, _VAES)
    if "vae" not in module_roles(path):
        raise ModuleChoiceError(f"{setting} {text!r} holds no VAE (a text encoder: choose it "
                                f"with forge_additional_modules); {_VAES[0]}")
    channels = vae_latent_channels(path)
    if channels is not None and takes is not None and channels != takes:
        raise ModuleChoiceError(f"{setting} {text!r} is a VAE of {channels} latent channels "
                                f"and {model.name} takes {takes}: name a VAE for it ("
                                f"{_VAES[0]}) or \"None\" for its own")
    return path


def _latent_channels(model: ModelEntry) -> int | None:
    """The latent channels of `model`'s VAE (its family's, `FamilyLoader.latent_channels`:
    16 for FLUX / SD3 / Chroma / Z-Image, 4 for SD 1.x / 2.x / SDXL); None when its files
    cannot tell (its load will say why)."""
    try:
        return family_of(model.path)[0].latent_channels
    except (OSError, ValueError):  # WeightsError is a ValueError
        return None


def _find(registry: ModelRegistry, text: str, setting: str,
          listing: tuple[str, str] = _MODULES) -> Path:
    """The module file `text` names (module docstring), or ModuleChoiceError naming `setting`
    and the endpoint (`listing`: its sentence and path) that lists the names to send."""
    listed, endpoint = listing
    modules = registry.vaes() if listing is _VAES else registry.modules
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
            raise ModuleChoiceError(f"{setting} {text!r}: {exc}") from None
        return inside
    # 3. a model named as a module, a path outside the models folder, or an unknown name
    if registry.find(text) is not None or registry.find(_file_name(text)) is not None:
        raise ModuleChoiceError(
            f"{setting} {text!r} is a model (GET /sdapi/v1/sd-models lists it), not a VAE or "
            f"text encoder: choose it with sd_model_checkpoint, and name module files here "
            f"({listed})")
    names = ", ".join(m.path.name for m in modules) or "none"
    where = ("is not a file inside this server's models folder"
             if Path(text).is_absolute() or "/" in text or "\\" in text
             else "is not one of this server's module files")
    raise ModuleChoiceError(f"{setting} {text!r} {where} ({names}; {listed}); put the file in "
                            "--models-dir and POST /sdapi/v1/refresh-checkpoints, then name it "
                            f"as {endpoint} lists it")
