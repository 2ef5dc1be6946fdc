"""ADetailer's API units: `alwayson_scripts: {"ADetailer": {"args": [...]}}` on txt2img /
img2img, read as the extension reads them (`adetailer/args.py` ADetailerArgs).

`args` is the extension's list: optionally its two leading booleans (enable ADetailer, skip
img2img), then one object per unit with its `ad_*` fields (defaults as there: ad_confidence
0.3, ad_dilate_erode 4, ad_mask_blur 4, ad_denoising_strength 0.4, ad_inpaint_only_masked
true with padding 32...). A unit whose ad_model is "None" (or ad_tab_enable / ad_tap_enable
false) is skipped. A field that cannot run here (a separate checkpoint or VAE, restore face,
a ControlNet model, YOLO-World classes, a noise multiplier) is refused naming it, as is an
unknown field, a value of the wrong type or range, a model that is not in the server's
ADetailer folder (`serve --adetailer-dir`, default the models folder's `adetailer`) and one
that is not a YOLOv8 file there (detection.check_yolo): 422 before anything is queued.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from threading import Lock
from typing import Any

from ...detection import YoloFile, check_yolo, load_yolo
from ...detection.masks import MERGE_INVERT
from ...loaders.errors import WeightsError
from ...pipelines.request import check_size
from ...process_shared import process_shared
from .generation import RequestError, resolve_sampler

__all__ = ["ADetailerModels", "ADetailerUnit", "adetailer_args", "parse_adetailer"]

SCRIPT = "adetailer"
SUFFIXES = ("pt", "pth")
# field: (default, kind, low, high); kind: bool, int, float, str
_FIELDS: dict[str, tuple[Any, type, float, float]] = {
    "ad_model": ("None", str, 0, 0), "ad_model_classes": ("", str, 0, 0),
    "ad_tab_enable": (True, bool, 0, 0), "ad_tap_enable": (True, bool, 0, 0),
    "ad_prompt": ("", str, 0, 0), "ad_negative_prompt": ("", str, 0, 0),
    "ad_confidence": (0.3, float, 0, 1), "ad_mask_filter_method": ("Area", str, 0, 0),
    "ad_mask_k": (0, int, 0, math.inf), "ad_mask_k_largest": (0, int, 0, math.inf),
    "ad_mask_min_ratio": (0.0, float, 0, 1), "ad_mask_max_ratio": (1.0, float, 0, 1),
    "ad_dilate_erode": (4, int, -512, 512), "ad_x_offset": (0, int, -4096, 4096),
    "ad_y_offset": (0, int, -4096, 4096), "ad_mask_merge_invert": ("None", str, 0, 0),
    "ad_mask_blur": (4, int, 0, 256), "ad_denoising_strength": (0.4, float, 0, 1),
    "ad_inpaint_only_masked": (True, bool, 0, 0),
    "ad_inpaint_only_masked_padding": (32, int, 0, 4096),
    "ad_use_inpaint_width_height": (False, bool, 0, 0),
    "ad_inpaint_width": (512, int, 8, 4096), "ad_inpaint_height": (512, int, 8, 4096),
    "ad_use_steps": (False, bool, 0, 0), "ad_steps": (28, int, 1, 150),
    "ad_use_cfg_scale": (False, bool, 0, 0), "ad_cfg_scale": (7.0, float, 0, 100),
    "ad_use_sampler": (False, bool, 0, 0), "ad_sampler": ("DPM++ 2M Karras", str, 0, 0),
    "ad_scheduler": ("Use same scheduler", str, 0, 0),
    "ad_use_clip_skip": (False, bool, 0, 0), "ad_clip_skip": (1, int, 1, 12),
    # accepted at their "off" values only (refused otherwise, see _UNSUPPORTED)
    "ad_use_checkpoint": (False, bool, 0, 0), "ad_checkpoint": (None, str, 0, 0),
    "ad_use_vae": (False, bool, 0, 0), "ad_vae": (None, str, 0, 0),
    "ad_use_noise_multiplier": (False, bool, 0, 0), "ad_noise_multiplier": (1.0, float, .5, 1.5),
    "ad_restore_face": (False, bool, 0, 0), "ad_controlnet_model": ("None", str, 0, 0),
    "ad_controlnet_module": ("None", str, 0, 0), "ad_controlnet_weight": (1.0, float, 0, 1),
    "ad_controlnet_guidance_start": (0.0, float, 0, 1),
    "ad_controlnet_guidance_end": (1.0, float, 0, 1), "is_api": (True, bool, 0, 0),
}
_UNSUPPORTED = {
    "ad_use_checkpoint": "a separate checkpoint for the inpaint pass",
    "ad_use_vae": "a separate VAE for the inpaint pass",
    "ad_use_noise_multiplier": "a noise multiplier",
    "ad_restore_face": "face restoration after the inpaint pass",
    "ad_controlnet_model": "a ControlNet model in the inpaint pass",
    "ad_model_classes": "YOLO-World classes",
}
_FILTERS = ("Area", "Confidence")


@dataclass(frozen=True)
class ADetailerUnit:
    """One unit's fields (the extension's names without `ad_`), its model's path, and its
    place (0: the first unit, whose infotext fields carry no suffix)."""

    index: int
    model: str
    path: Path
    values: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None


class ADetailerModels:
    """The detection models of a folder (`.pt` files, named as the extension names them: the
    file name), each loaded once per device and file version."""

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = None if folder is None else Path(folder)
        self._loaded: dict[tuple[Path, int, int], YoloFile] = {}
        self._lock = Lock()

    def __reduce__(self) -> tuple[Any, ...]:
        # a job sent to a worker process (serve --devices) takes that process's models of the
        # folder along (diffusion.process_shared): its detectors are read once per process,
        # not once per job
        return process_shared, (ADetailerModels, self.folder)

    def names(self) -> list[str]:
        if self.folder is None or not self.folder.is_dir():
            return []
        return sorted(p.name for p in self.folder.iterdir()
                      if p.is_file() and p.suffix.lower().lstrip(".") in SUFFIXES)

    def find(self, name: str) -> Path | None:
        for file in self.names():
            if name in (file, Path(file).stem):
                return self.folder / file if self.folder is not None else None
        return None


    def forget(self) -> None:
        """Drop the models loaded (unload-checkpoint: their GPU memory goes once nothing else
        holds them); the next unit loads its model again."""
        with self._lock:
            self._loaded.clear()

    def load(self, path: Path, device: Any) -> YoloFile:
        """The model of `path` on `device` (the worker's), read there on first use; an older
        version of the file is dropped, the same one on other devices kept (each of a thread
        server's GPUs detects with its own: dropping the other's made two workers read the
        file again in turn)."""
        version = path.stat().st_mtime_ns
        key = (path, version, id(device))
        with self._lock:
            if key not in self._loaded:
                self._loaded = {k: v for k, v in self._loaded.items()
                                if k[0] != path or k[1] == version}
                self._loaded[key] = load_yolo(path, device)
            return self._loaded[key]


def adetailer_args(alwayson_scripts: dict[str, Any] | None) -> list[Any] | None:
    """The ADetailer script's `args` (any case of its name), None when the body has none."""
    for name, value in (alwayson_scripts or {}).items():
        if name.lower() == SCRIPT:
            if not isinstance(value, dict) or not isinstance(value.get("args", []), list):
                raise RequestError(f"alwayson_scripts.{name} must be an object with a list "
                                   "'args': [enable, skip_img2img, unit, ...]")
            return value.get("args", [])
    return None


def _value(raw: dict[str, Any], key: str, where: str) -> Any:
    default, kind, low, high = _FIELDS[key]
    value = raw.get(key, default)
    if value is None and default is None:
        return None
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = not isinstance(value, bool) and (isinstance(value, int) or (
            isinstance(value, float) and value.is_integer()))
    elif kind is float:
        ok = not isinstance(value, bool) and isinstance(value, (int, float))
    else:
        ok = isinstance(value, str)
    if not ok:
        raise RequestError(f"{where}.{key}: {kind.__name__} expected, got {value!r:.60}")
    if kind in (int, float) and not low <= value <= high:
        raise RequestError(f"{where}.{key}: {value} is out of range [{low}, {high}]")
    return kind(value)


def _inpaint_size(values: dict[str, Any], where: str, max_size: int | None) -> None:
    """The unit's own inpaint size, where it applies, as a request's width and height are held:
    a multiple of 8 and at most --max-size (RequestError before anything is queued)."""
    if not (values["use_inpaint_width_height"] and values["inpaint_only_masked"]):
        return
    for key in ("inpaint_width", "inpaint_height"):
        try:
            check_size(f"{where}.ad_{key}", values[key])
        except ValueError as exc:
            raise RequestError(str(exc)) from None
        if max_size is not None and values[key] > max_size:
            raise RequestError(f"{where}.ad_{key} {values[key]} is above this server's limit "
                               f"of {max_size} px (--max-size)")


def _unit(raw: dict[str, Any], index: int, where: str, models: ADetailerModels,
          max_size: int | None) -> ADetailerUnit | None:
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise RequestError(f"{where}: unknown field {unknown[0]!r}; ADetailer's fields are "
                           f"{', '.join(_FIELDS)}")
    values = {key[3:] if key.startswith("ad_") else key: _value(raw, key, where)
              for key in _FIELDS}
    if values["model"] == "None" or not (values["tab_enable"] and values["tap_enable"]):
        return None
    for key, what in _UNSUPPORTED.items():
        default = _FIELDS[key][0]
        if raw.get(key, default) not in (default, "", "None"):
            raise RequestError(f"{where}.{key}: {what} is not supported here; leave it out")
    if values["mask_merge_invert"] not in MERGE_INVERT:
        raise RequestError(f"{where}.ad_mask_merge_invert: one of {', '.join(MERGE_INVERT)}, "
                           f"got {values['mask_merge_invert']!r}")
    if values["mask_filter_method"] not in _FILTERS:
        raise RequestError(f"{where}.ad_mask_filter_method: Area or Confidence, got "
                           f"{values['mask_filter_method']!r}")
    if values["use_sampler"]:  # refused here, before anything is queued
        try:
            resolve_sampler(values["sampler"], None if values["scheduler"] ==
                            "Use same scheduler" else values["scheduler"])
        except RequestError as exc:
            raise RequestError(f"{where}.ad_sampler: {exc}") from None
    _inpaint_size(values, where, max_size)
    if "ad_mask_k" not in raw:  # the older name
        values["mask_k"] = values["mask_k_largest"]
    path = models.find(values["model"])
    if path is None and models.folder is None:
        raise RequestError(f"{where}.ad_model: {values['model']!r}: this server has no "
                           "ADetailer models folder; start it with --adetailer-dir or "
                           "--models-dir (its adetailer folder)")
    if path is None:
        listed = ", ".join(models.names()) or "none"
        raise RequestError(f"{where}.ad_model: {values['model']!r} is not in the ADetailer "
                           f"models folder {models.folder} (it holds: {listed}); put the .pt "
                           "file there, or name one of them")
    try:  # a damaged file refused now, not on the worker once the picture is drawn
        _readable(path, path.stat().st_mtime_ns)
    except (WeightsError, OSError) as exc:
        raise RequestError(f"{where}.ad_model: {values['model']!r} cannot be read: "
                           f"{exc}") from None
    return ADetailerUnit(index, values["model"], path, values)


@lru_cache(maxsize=64)
def _readable(path: Path, changed: int) -> None:
    """check_yolo of an ADetailer folder's file, read once per version of the file."""
    check_yolo(path)


def parse_adetailer(args: list[Any], models: ADetailerModels, kind: str,
                    max_size: int | None = None) -> tuple[ADetailerUnit, ...]:
    """The units that run, from the script's `args` (with or without its leading booleans);
    `max_size`: the server's --max-size, which a unit's own inpaint size is held to."""
    where = "alwayson_scripts.ADetailer.args"
    rest = list(args)
    enabled = True
    if rest and isinstance(rest[0], bool):
        enabled = rest.pop(0)
        if rest and isinstance(rest[0], bool):
            if rest.pop(0) and kind == "img2img":
                raise RequestError(f"{where}[1]: skip img2img is not supported here; send "
                                   "false, or run ADetailer on a txt2img")
    units = []
    for i, raw in enumerate(rest):
        if not isinstance(raw, dict):
            raise RequestError(f"{where}[{i + len(args) - len(rest)}]: an ADetailer unit is a "
                               f"JSON object of ad_* fields, got {type(raw).__name__}")
        unit = _unit(raw, i, f"{where}[{i + len(args) - len(rest)}]", models, max_size)
        if unit is not None:
            units.append(unit)
    return tuple(units) if enabled else ()
