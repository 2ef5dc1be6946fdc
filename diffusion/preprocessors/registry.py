"""Preprocessor names as the ControlNet extension's API spells them, and how to run one."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucore import Device

from . import depth, filters
from .ip_adapter_modules import IP_ADAPTER_MODULES

__all__ = ["PREPROCESSORS", "Preprocessor", "hwc3", "module_list", "preprocess"]


@dataclass(frozen=True)
class Preprocessor:
    """One module: its function (picture, settings..., device) and the defaults of the
    extension's threshold_a / threshold_b sliders (None: the module takes none)."""

    name: str
    run: Callable[..., np.ndarray]
    threshold_a: float | None = None
    threshold_b: float | None = None


PREPROCESSORS: dict[str, Preprocessor] = {p.name: p for p in (
    Preprocessor("none", filters.identity),
    Preprocessor("canny", filters.canny, 100.0, 200.0),
    Preprocessor("invert", filters.invert),
    Preprocessor("threshold", filters.threshold, 127.0),
    Preprocessor("scribble_thr", filters.scribble_threshold),
    Preprocessor("blur_gaussian", filters.blur_gaussian, 9.0),
    Preprocessor("tile_resample", filters.tile_resample, 1.0),
    Preprocessor("depth_anything_v2", depth.depth_anything_v2),
    # the picture as it is, for an IP-Adapter's image encoder (ip_adapter_modules)
    *(Preprocessor(name, filters.identity) for name in IP_ADAPTER_MODULES),
)}


def module_list() -> list[str]:
    """The module names, as `/controlnet/module_list` lists them."""
    return list(PREPROCESSORS)


def hwc3(image: Any) -> np.ndarray:
    """The picture as uint8 HxWx3 (gray repeated, alpha dropped): the extension's HWC3 (its
    alpha blend over white is left to the caller)."""
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or 0 in array.shape or (
            array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ValueError(f"a control picture is uint8 HxW, HxWx3 or HxWx4; got {array.dtype} "
                         f"{array.shape}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def preprocess(module: str, image: Any, *, threshold_a: float | None = None,
               threshold_b: float | None = None, device: Device | None = None) -> np.ndarray:
    """The control map of `image` by `module` (uint8 HxWx3). threshold_a / threshold_b: the
    module's settings (None or the extension's -1: its default). ValueError naming the module
    or setting that is wrong."""
    found = PREPROCESSORS.get(module)
    if found is None:
        raise ValueError(f"unknown preprocessor {module!r}; the modules are "
                         f"{', '.join(PREPROCESSORS)}")
    settings = []
    for name, given, default in (("threshold_a", threshold_a, found.threshold_a),
                                 ("threshold_b", threshold_b, found.threshold_b)):
        if default is None:
            continue
        value = default if given is None or given == -1 else float(given)
        if not math.isfinite(value):
            raise ValueError(f"{module}: {name} must be a finite number, got {given!r}")
        settings.append(value)
    return found.run(hwc3(image), *settings, device=device)
