"""A control unit as the ControlNet extension describes one, before its model is loaded: what
the CLI's options, the API's `alwayson_scripts` units and an infotext's "ControlNet N" field
all become, checked once with one message per field.

    spec = ControlSpec(model="control_v11p_sd15_canny", image=picture, module="canny",
                       pixel_perfect=True)
    unit = spec.unit(controlnet, width=512, height=512)   # a ControlUnit, map detected
    spec.serialize("control_v11p_sd15_canny [d14c016b]")
    # 'Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, Resize Mode: ...'

The infotext text is the extension's `ControlNetUnit.serialize` (its eleven fields in its
order, values as Python prints them) and `parse_unit` its `ControlNetUnit.parse`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from numbers import Integral, Real
from typing import Any

from ..models.ip_adapter import IPAdapter
from ..preprocessors.ip_adapter_modules import IP_ADAPTER_MODULES
from ..preprocessors.registry import (
    INPAINT_MODULES,
    MODULE_ALIASES,
    PREPROCESSORS,
    RESOLUTION,
    Slider,
    hwc3,
    inpaint_map,
    module_name,
    preprocess,
)
from ..preprocessors.resize import RESIZE_MODES, pixel_perfect_resolution, resize_mode
from .colorfix import COLORFIX_MODULES, ColorFix
from .control import CONTROL_MODES, HR_OPTIONS, ControlUnit
from .control_map import MAP_MODEL, ControlMap
from .ip_adapter import IPAdapterUnit
from .reference import REFERENCE_MODULES, ReferenceUnit

__all__ = ["ControlSpec", "control_mode", "numpy_seed", "parse_unit", "unit_label"]

_FIELDS = ("module", "model", "weight", "resize_mode", "processor_res", "threshold_a",
           "threshold_b", "guidance_start", "guidance_end", "pixel_perfect", "control_mode")
# what the extension's bound check gives a module without that slider (a hidden 0..1 slider)
_HIDDEN = Slider("", 0.5, 0.0, 1.0)


def control_mode(value: Any) -> str:
    """The control mode named by `value`: its name (any case) or 0, 1, 2."""
    # int(): exact for an Integral, and what the comparison needs to type-check (numbers'
    # ABCs declare no reflected comparisons, so mypy cannot see 0 <= value)
    if isinstance(value, Integral) and not isinstance(value, bool) and 0 <= int(value) <= 2:
        return CONTROL_MODES[int(value)]
    if isinstance(value, str):
        by_lower = {mode.lower(): mode for mode in CONTROL_MODES}
        text = value.strip().lower()
        if text in by_lower:
            return by_lower[text]
        if text in ("0", "1", "2"):
            return CONTROL_MODES[int(text)]
    raise ValueError(f"control_mode {value!r}: expected one of "
                     f"{', '.join(map(repr, CONTROL_MODES))} (or 0, 1, 2)")


def _number(name: str, value: Any, low: float = -math.inf, high: float = math.inf) -> float:
    # numbers.Real declares only < and <= (low <= value needs the reflected >=): written with
    # those, the same test for every finite real
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) \
            or value < low or not value <= high:
        where = f" in [{low:g}, {high:g}]" if math.isfinite(high) else ""
        raise ValueError(f"{name} must be a finite number{where}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ControlSpec:
    """One unit's settings, with the extension's names and defaults. `model`: a path (CLI)
    or a model's name (server, infotext); `image`: the picture (uint8 HxW, HxWx3 or HxWx4),
    None when the caller supplies it later (img2img: the init image). `processor_res`,
    `threshold_a`, `threshold_b`: -1 or a value off the module's slider means its default.
    `image_encoder`: an IP-Adapter unit's CLIP image encoder (a path; the server's choice,
    diffusion.server.catalog.image_encoders), None for the others. `mask`: the inpaint modules'
    mask (uint8, the image's size, white: repaint). `union_mode`: a Union ControlNet's control
    type (FLUX's InstantX / Shakker Union: 0 canny, 1 tile, 2 depth, 3 blur, 4 pose, 5 gray,
    6 low quality; SDXL's xinsir Union: 0 openpose, 1 depth, 2 soft edge, 3 canny / lineart,
    4 normal, 5 segment, ProMax also 6 tile, 7 inpaint), None for other models."""

    model: str
    image: Any = None
    module: str = "none"
    weight: float = 1.0
    resize_mode: Any = "Crop and Resize"
    processor_res: int = -1
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    pixel_perfect: bool = False
    control_mode: Any = "Balanced"
    hr_option: str = "Both"
    image_encoder: str | None = None
    mask: Any = None
    union_mode: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"model must name a control model, got {self.model!r}")
        object.__setattr__(self, "module", module_name(self.module))
        if self.module not in PREPROCESSORS:
            raise ValueError(f"module {self.module!r} is not a preprocessor here; the modules "
                             f"are {', '.join(PREPROCESSORS)} (or the extension's names "
                             f"{', '.join(MODULE_ALIASES)})")
        _number("weight", self.weight, 0.0, 2.0)
        start = _number("guidance_start", self.guidance_start, 0.0, 1.0)
        end = _number("guidance_end", self.guidance_end, 0.0, 1.0)
        if start > end:
            raise ValueError(f"guidance_start ({start:g}) is after guidance_end ({end:g})")
        if isinstance(self.processor_res, bool) or not isinstance(self.processor_res, Integral):
            raise ValueError(f"processor_res must be a whole number (-1: the module's "
                             f"default), got {self.processor_res!r}")
        for name in ("threshold_a", "threshold_b"):
            _number(name, getattr(self, name))
        if self.union_mode is not None and (isinstance(self.union_mode, bool) or not isinstance(
                self.union_mode, Integral) or self.union_mode < 0):
            raise ValueError(f"union_mode must be a whole number from 0 (a Union ControlNet's "
                             f"control type), got {self.union_mode!r}")
        if not isinstance(self.pixel_perfect, bool):
            raise ValueError(f"pixel_perfect must be true or false, got {self.pixel_perfect!r}")
        if self.hr_option not in HR_OPTIONS:
            raise ValueError(f"hr_option {self.hr_option!r}: expected one of "
                             f"{', '.join(map(repr, HR_OPTIONS))}")
        if self.mask is not None and self.image is not None and self.module in INPAINT_MODULES:
            inpaint_map(self.image, self.mask)  # a mask that does not fit: now, named
        object.__setattr__(self, "resize_mode", resize_mode(self.resize_mode))
        object.__setattr__(self, "control_mode", control_mode(self.control_mode))

    def bounded(self) -> tuple[int, float, float]:
        """(processor_res, threshold_a, threshold_b) after the extension's bound check."""
        found = PREPROCESSORS[self.module]
        res = int(RESOLUTION.pick(self.processor_res))
        return (res, (found.threshold_a or _HIDDEN).pick(self.threshold_a),
                (found.threshold_b or _HIDDEN).pick(self.threshold_b))

    def detect(self, width: int, height: int, *, device: Any = None,
               seed: int | None = None) -> tuple[Any, ControlSpec]:
        """The control map of the image for a `width` x `height` picture (pixel perfect: at
        the resolution the resize mode needs), and this spec with the settings used. `seed`:
        a random module's numpy seed (numpy_seed)."""
        if self.image is None:
            raise ValueError("image is missing: give the unit a picture")
        picture = hwc3(self.image)
        res, low, high = self.bounded()
        if self.pixel_perfect:
            res = pixel_perfect_resolution(picture, height, width, self.resize_mode)
        if self.module in INPAINT_MODULES:  # no preprocessing: the picture and its mask
            return inpaint_map(picture, self.mask), replace(self, processor_res=res,
                                                            threshold_a=low, threshold_b=high)
        found = PREPROCESSORS[self.module]
        detected = preprocess(self.module, picture, threshold_a=low, threshold_b=high,
                              resolution=res if found.resolution else None, seed=seed,
                              device=device)
        return detected, replace(self, processor_res=res, threshold_a=low, threshold_b=high)

    def unit(self, model: Any, *, width: int, height: int, device: Any = None,
             seed: int | None = None, image_encoder: Any = None
             ) -> ControlUnit | IPAdapterUnit | ControlMap | ReferenceUnit:
        """The ControlUnit of this spec with its loaded `model`, its map detected for the
        first pass's size (ControlUnit fits it to each pass's size); for an IPAdapter model
        (an IP-Adapter module), the IPAdapterUnit reading the picture as it is with
        `image_encoder` (a loaded CLIP vision model); for model "None" (`model` None), the
        ControlMap a FLUX.1 Canny / Depth dev model takes in its input, or with module
        reference_only a ReferenceUnit (diffusion.pipelines.reference)."""
        if self.module in REFERENCE_MODULES:
            if self.model != MAP_MODEL:
                raise ValueError(f"module {self.module!r} takes no control model; give "
                                 f"model {MAP_MODEL!r}")
            detected, used = self.detect(width, height, device=device, seed=seed)
            return ReferenceUnit(detected, weight=float(self.weight),
                                 guidance_start=float(self.guidance_start),
                                 guidance_end=float(self.guidance_end),
                                 style_fidelity=float(used.threshold_a),
                                 control_mode=self.control_mode, resize_mode=self.resize_mode,
                                 hr_option=self.hr_option, label=used.serialize(MAP_MODEL),
                                 module=self.module)
        if self.model == MAP_MODEL:
            detected, used = self.detect(width, height, device=device, seed=seed)
            return ControlMap(detected, resize_mode=self.resize_mode,
                              label=used.serialize(MAP_MODEL), hr_option=self.hr_option)
        title = getattr(model, "title", None) or self.model
        if isinstance(model, IPAdapter) != (self.module in IP_ADAPTER_MODULES):
            raise ValueError(f"module {self.module!r} does not go with model {title}: " + (
                f"an IP-Adapter takes one of {', '.join(IP_ADAPTER_MODULES)}"
                if isinstance(model, IPAdapter) else
                f"an IP-Adapter module needs an IP-Adapter model, not a "
                f"{type(model).__name__}"))
        if isinstance(model, IPAdapter):
            if self.image is None:
                raise ValueError("image is missing: give the unit a picture")
            return IPAdapterUnit(model, hwc3(self.image), weight=float(self.weight),
                                 guidance_start=float(self.guidance_start),
                                 guidance_end=float(self.guidance_end),
                                 image_encoder=image_encoder, hr_option=self.hr_option,
                                 label=self.serialize(title))
        detected, used = self.detect(width, height, device=device, seed=seed)
        return ControlUnit(model, detected, weight=float(self.weight),
                           guidance_start=float(self.guidance_start),
                           guidance_end=float(self.guidance_end),
                           control_mode=self.control_mode, resize_mode=self.resize_mode,
                           hr_option=self.hr_option, label=used.serialize(title),
                           union_mode=None if self.union_mode is None else int(self.union_mode),
                           colorfix=ColorFix(int(used.threshold_a), float(used.threshold_b)
                                             if self.module.endswith("+sharp") else None)
                           if self.module in COLORFIX_MODULES else None)

    def serialize(self, model_title: str | None = None) -> str:
        """The extension's infotext text of this unit ("Module: canny, Model: ..., ...")."""
        res, low, high = self.bounded()
        if self.pixel_perfect and self.processor_res > 0:  # detect's own resolution
            res = int(self.processor_res)
        values = {"module": self.module, "model": model_title or self.model,
                  "weight": float(self.weight), "resize_mode": self.resize_mode,
                  "processor_res": res, "threshold_a": low, "threshold_b": high,
                  "guidance_start": float(self.guidance_start),
                  "guidance_end": float(self.guidance_end),
                  "pixel_perfect": self.pixel_perfect, "control_mode": self.control_mode}
        text = ", ".join(f"{_display(name)}: {values[name]}" for name in _FIELDS)
        return text if self.union_mode is None else f"{text}, Union Mode: {self.union_mode}"


def _display(field: str) -> str:
    return " ".join(word.capitalize() for word in field.split("_"))


def _value(text: str) -> Any:
    """The extension's `parse_value`: True/False, a whole number, a number, else text."""
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_unit(text: str) -> dict[str, Any]:
    """An infotext's "ControlNet N" text as ControlSpec keywords (no image); ValueError
    naming what cannot be read."""
    by_display = {_display(name): name for name in (*_FIELDS, "union_mode")}
    out: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition(": ")
        if not sep or key not in by_display:
            raise ValueError(f"ControlNet infotext {text!r}: cannot read {item.strip()!r}")
        out[by_display[key]] = _value(value.strip())
    if "model" in out:
        out["model"] = str(out["model"])
    if "resize_mode" in out and out["resize_mode"] not in RESIZE_MODES:
        out["resize_mode"] = resize_mode(out["resize_mode"])
    return out


def numpy_seed(seed: int | None, subseed: int | None) -> int | None:
    """The numpy seed the extension sets before it preprocesses (`set_numpy_seed`): the
    generation's seed + subseed (the seed where the subseed is -1 or missing) in 32 bits;
    None where the seed is not chosen yet."""
    if seed is None or seed < 0:
        return None
    return (seed + (seed if subseed is None or subseed < 0 else subseed)) & 0xFFFFFFFF


def unit_label(unit: ControlUnit | IPAdapterUnit | ControlMap | ReferenceUnit) -> str:
    """The infotext text of a ControlUnit: its spec's, or (built in Python) what it has; an
    IPAdapterUnit's as the extension writes IP-Adapter units."""
    if isinstance(unit, IPAdapterUnit):
        return unit.infotext()
    if unit.label is not None:
        return unit.label
    if isinstance(unit, ControlMap):
        return ControlSpec(model=MAP_MODEL, resize_mode=unit.resize_mode).serialize()
    if isinstance(unit, ReferenceUnit):
        return ControlSpec(model=MAP_MODEL, module=unit.module,
                           weight=min(max(unit.weight, 0.0), 2.0),
                           threshold_a=unit.style_fidelity, resize_mode=unit.resize_mode,
                           guidance_start=unit.guidance_start, guidance_end=unit.guidance_end,
                           control_mode=unit.control_mode).serialize()
    title = getattr(unit.model, "title", None) or type(unit.model).__name__
    return ControlSpec(model=title, weight=min(max(unit.weight, 0.0), 2.0),
                       resize_mode=unit.resize_mode, guidance_start=unit.guidance_start,
                       guidance_end=unit.guidance_end,
                       control_mode=unit.control_mode).serialize()
