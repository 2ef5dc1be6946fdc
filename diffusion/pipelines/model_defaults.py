"""Where a model's recommended sampling comes from before it loads: a folder's
`defaults.json` (or the copy `quantize` puts in a GGUF), and Turbo models' settings (the
family registry, `families`, adds each family's own)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..loaders import SafetensorsFile, WeightsError
from ..loaders.formats.gguf_file import GGUFFile
from .contract import SAMPLING_SETTINGS, SamplingDefaults

__all__ = ["DEFAULTS_FILE", "DEFAULTS_KEY", "TURBO_DEFAULTS", "is_turbo", "parse_defaults",
           "read_defaults"]

# A model folder's recommended sampling settings, e.g. {"steps": 10, "sampler": "DDIM",
# "cfg_scale": 5.0}; every key optional. Not a diffusers file: diffusers ignores it.
DEFAULTS_FILE = "defaults.json"
# The same JSON text in a GGUF's metadata (`quantize` copies the folder's file there), beside
# the whole-model layout's diffusion.* keys (diffusion.loaders.sd.gguf_model).
DEFAULTS_KEY = "diffusion.defaults"


def _defaults_value(key: str, value: Any) -> Any:
    """`value` of `key` as SamplingDefaults holds it; ValueError saying what it must be."""
    if key == "steps":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"steps must be a whole number >= 1, got {value!r}")
        return value
    if key == "cfg_scale":
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value)):
            raise ValueError(f"cfg_scale must be a finite number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"sampler must be a sampler name (a string), got {value!r}")
    from ..sampling.kdiffusion import sampler_label

    return sampler_label(value)


def read_defaults(path: str | os.PathLike[str]) -> SamplingDefaults:
    """The sampling settings the model at `path` recommends: its folder's `defaults.json`
    (keys `steps`, `sampler`, `cfg_scale`, each optional), or a `.gguf`'s DEFAULTS_KEY (the
    same JSON, which `python -m diffusion quantize` copies from the folder's file). A folder
    without one, a GGUF without the key, any other file -> all None.

    Raises WeightsError naming the file (and key) for bad JSON, unknown keys or wrong types.
    """
    path = Path(path)
    if path.suffix.lower() == ".gguf" and path.is_file():
        text = GGUFFile(path).metadata.get(DEFAULTS_KEY)  # read once, kept for the load
        return (SamplingDefaults() if text is None
                else parse_defaults(str(text), f"{path}'s {DEFAULTS_KEY} metadata"))
    file = path / DEFAULTS_FILE
    if not file.is_file():
        return SamplingDefaults()
    return parse_defaults(file.read_bytes(), str(file))


def parse_defaults(text: str | bytes, where: str) -> SamplingDefaults:
    """`text` (a defaults.json's JSON) as SamplingDefaults; WeightsError starting with `where`
    (the file, or the GGUF key) for bad JSON, unknown keys or wrong types."""
    allowed = list(SAMPLING_SETTINGS)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise WeightsError(f"{where} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{where} must hold a JSON object with the optional keys "
                           f"{', '.join(allowed)}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise WeightsError(f"{where}: unknown key{'s' * (len(unknown) > 1)} "
                           f"{', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")
    try:
        return SamplingDefaults(**{key: _defaults_value(key, value)
                                   for key, value in data.items()})
    except ValueError as exc:
        raise WeightsError(f"{where}: {exc}") from None


# What a Turbo model samples with when its defaults.json does not say (SD-Turbo, SDXL-Turbo:
# adversarial diffusion distillation, trained for 1-4 steps at 512 px without guidance): one
# Euler a step on the SGM Uniform schedule (at one step: timestep 999, diffusers' trailing
# spacing), CFG scale 1 (no unconditional pass).
TURBO_DEFAULTS = SamplingDefaults(steps=1, sampler="Euler a SGM Uniform", cfg_scale=1.0,
                                  preset="turbo", why="1-4 steps without guidance")


def is_turbo(path: str | os.PathLike[str]) -> bool:
    """Whether the model at `path` says it is a Turbo model (SD-Turbo, SDXL-Turbo), read
    without loading it: "turbo" in its folder or file name (sd-turbo, sdxl-turbo,
    sd_xl_turbo_1.0_fp16.safetensors; for a Hugging Face cache snapshot the repository's
    folder, models--stabilityai--sdxl-turbo) or in a single file's ModelSpec title. Nothing
    else marks them: their weights and configs are those of SD 2.1 and SDXL, and trailing
    timestep spacing is no sign (zero-SNR models such as the bundled shapes-128 use it)."""
    path = Path(path)
    names = [path.name]
    if path.parent.name == "snapshots":
        names.append(path.parent.parent.name)
    if any("turbo" in name.lower() for name in names):
        return True
    if path.suffix.lower() == ".safetensors" and path.is_file():
        try:
            said = SafetensorsFile(path).metadata.get("modelspec.title", "")
        except WeightsError:
            return False  # loading names the bad file
        return "turbo" in said.lower()
    return False
