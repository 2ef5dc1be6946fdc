"""Preprocessor names as the ControlNet extension's API spells them, and how to run one."""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucore import Device

from . import (
    depth,
    dwpose,
    filters,
    lineart,
    lineart_anime,
    midas,
    mlsd,
    normal,
    openpose,
    shuffle,
    softedge,
)
from .ip_adapter_modules import IP_ADAPTER_MODULES
from .resize import resize_with_pad

__all__ = ["INPAINT_MODULES", "MODULE_ALIASES", "PREPROCESSORS", "Preprocessor", "Slider",
           "control_picture", "hwc3", "inpaint_map", "module_detail", "module_list", "module_name",
           "preprocess"]


@dataclass(frozen=True)
class Slider:
    """One of the extension's sliders: its label, default and range (a value outside the
    range, or -1, means the default, as the extension's `bound_check_params`)."""

    label: str
    value: float
    minimum: float
    maximum: float
    step: float = 1.0

    def pick(self, given: float | None) -> float:
        if given is None:
            return float(self.value)
        if not math.isfinite(given):
            raise ValueError(f"{self.label}: must be a finite number, got {given!r}")
        return float(given) if self.minimum <= given <= self.maximum else float(self.value)

    def api_json(self) -> dict[str, Any]:
        return {"name": self.label, "value": self.value, "min": self.minimum,
                "max": self.maximum, "step": self.step}


RESOLUTION = Slider("Resolution", 512, 64, 2048)


@dataclass(frozen=True)
class Preprocessor:
    """One module: its function (picture, settings..., device), the extension's
    threshold_a / threshold_b sliders (None: the module takes none), and whether it first
    scales the picture to the processor resolution (`resize_image_with_pad`): "pad" runs on
    the padded picture and cuts the map, "scale" cuts the picture first, "scale512" too at
    512 whatever the resolution asked (the extension's hidden slider). `seeded`: its run
    takes the numpy seed (`seed=`)."""

    name: str
    run: Callable[..., np.ndarray]
    threshold_a: Slider | None = None
    threshold_b: Slider | None = None
    resolution: str | None = None
    seeded: bool = False


PREPROCESSORS: dict[str, Preprocessor] = {p.name: p for p in (
    Preprocessor("none", filters.identity),
    Preprocessor("canny", filters.canny, Slider("Low Threshold", 100, 1, 255),
                 Slider("High Threshold", 200, 1, 255), resolution="pad"),
    Preprocessor("invert", filters.invert),
    Preprocessor("threshold", filters.threshold, Slider("Binarization Threshold", 127, 0, 255),
                 resolution="pad"),
    Preprocessor("scribble_thr", filters.scribble_threshold, resolution="pad"),
    Preprocessor("blur_gaussian", filters.blur_gaussian, Slider("Sigma", 9.0, 0.01, 64.0, 0.01),
                 resolution="scale"),
    Preprocessor("tile_resample", filters.tile_resample,
                 Slider("Down Sampling Rate", 1.0, 1.0, 8.0, 0.01)),
    # the picture as it is, for a tile ControlNet; the sliders act on the UNet's noise
    # prediction (diffusion.pipelines.colorfix)
    Preprocessor("tile_colorfix", filters.colorfix, Slider("Variation", 8.0, 3.0, 32.0)),
    Preprocessor("tile_colorfix+sharp", filters.colorfix, Slider("Variation", 8.0, 3.0, 32.0),
                 Slider("Sharpness", 1.0, 0.0, 2.0, 0.01)),
    Preprocessor("shuffle", shuffle.shuffle, resolution="scale512", seeded=True),
    Preprocessor("depth_anything_v2", depth.depth_anything_v2),
    # model-based: their files in the annotator folder (loaders.control.annotator_file)
    Preprocessor("depth_midas", midas.depth_midas, resolution="pad"),
    Preprocessor("normal_midas", midas.normal_midas,
                 Slider("Normal Background Threshold", 0.4, 0.0, 1.0, 0.01), resolution="pad"),
    Preprocessor("lineart_realistic", lineart.lineart_realistic, resolution="pad"),
    Preprocessor("lineart_coarse", lineart.lineart_coarse, resolution="pad"),
    Preprocessor("lineart_anime", lineart_anime.lineart_anime, resolution="pad"),
    Preprocessor("mlsd", mlsd.mlsd, Slider("MLSD Value Threshold", 0.1, 0.01, 2.0, 0.01),
                 Slider("MLSD Distance Threshold", 0.1, 0.01, 20.0, 0.01), resolution="pad"),
    Preprocessor("normal_bae", normal.normal_bae, resolution="pad"),
    Preprocessor("openpose", openpose.openpose, resolution="pad"),
    *(Preprocessor(name, functools.partial(openpose.openpose_map, body=body, hands=hands,
                                           face=face), resolution="pad")
      for name, (body, hands, face) in openpose.POSE_MODULES.items() if name != "openpose"),
    # DWPose's two ONNX graphs (yolox_l.onnx, dw-ll_ucoco_384.onnx) on our kernels
    Preprocessor("dw_openpose_full", dwpose.dw_openpose_full, resolution="pad"),
    Preprocessor("softedge_hed", softedge.softedge_hed, resolution="pad"),
    Preprocessor("softedge_hedsafe", softedge.softedge_hedsafe, resolution="pad"),
    Preprocessor("softedge_pidinet", softedge.softedge_pidinet, resolution="pad"),
    Preprocessor("softedge_pidisafe", softedge.softedge_pidisafe, resolution="pad"),
    # the picture with the unit's mask in alpha, for the inpaint ControlNet (inpaint_map)
    *(Preprocessor(name, filters.identity) for name in ("inpaint", "inpaint_global_harmonious",
                                                        "inpaint_only")),
    # the picture as it is, for reference_only's attention injection and reference_adain's
    # renormalized block outputs (no model; diffusion.pipelines.reference)
    *(Preprocessor(name, filters.reference,
                   Slider("Style Fidelity (only for Balance mode)", 0.5, 0.0, 1.0, 0.01))
      for name in ("reference_only", "reference_adain", "reference_adain+attn")),
    # the picture as it is, for an IP-Adapter's image encoder (ip_adapter_modules)
    *(Preprocessor(name, filters.identity) for name in IP_ADAPTER_MODULES),
)}


# The extension's other spellings of these modules: its internal names (the keys of its
# `preprocessor_aliases`, which clients and old API scripts send) and its UI labels.
MODULE_ALIASES = {
    "hed": "softedge_hed", "hed_safe": "softedge_hedsafe", "pidinet": "softedge_pidinet",
    "pidinet_safe": "softedge_pidisafe", "lineart": "lineart_realistic",
    "invert (from white bg & black line)": "invert", "depth": "depth_midas",
    "normal_map": "normal_midas",
}


def module_name(module: Any) -> Any:
    """`module` as this registry names it: an alias of the extension's replaced by the module
    it names; anything else as it is."""
    return MODULE_ALIASES.get(module, module) if isinstance(module, str) else module


INPAINT_MODULES = ("inpaint", "inpaint_global_harmonious", "inpaint_only")


def inpaint_map(image: Any, mask: Any) -> np.ndarray:
    """The extension's inpaint input: the picture (uint8 HxWx3) with the mask's first channel
    in alpha (white: repaint); a mask that is empty, all black or all white leaves alpha 0
    (the extension's `have_mask`)."""
    colour = hwc3(image)
    alpha = np.zeros(colour.shape[:2], np.uint8)
    if mask is not None:
        array = np.asarray(mask)
        if array.dtype != np.uint8 or array.ndim not in (2, 3) or 0 in array.shape:
            raise ValueError(f"mask: uint8 HxW or HxWxC, got {array.dtype} {array.shape}")
        first = array if array.ndim == 2 else array[:, :, 0]
        if first.shape != colour.shape[:2]:
            raise ValueError(f"mask: {first.shape[1]}x{first.shape[0]}, but the picture is "
                             f"{colour.shape[1]}x{colour.shape[0]}; send them the same size")
        if not ((first <= 5).all() or (first >= 250).all()):
            alpha = first
    return np.concatenate([colour, alpha[:, :, None]], axis=2)


def module_list() -> list[str]:
    """The module names, as `/controlnet/module_list` lists them."""
    return list(PREPROCESSORS)


def module_detail() -> dict[str, Any]:
    """`/controlnet/module_list`'s module_detail: each module's sliders."""
    return {p.name: {"model_free": True, "sliders": [s.api_json() for s in (
        RESOLUTION if p.resolution in ("pad", "scale") else None, p.threshold_a,
        p.threshold_b) if s is not None]}
        for p in PREPROCESSORS.values()}


def hwc3(image: Any) -> np.ndarray:
    """The picture as uint8 HxWx3 (gray repeated, alpha blended over white): the extension's
    HWC3 (a drawing on a transparent background is one on white)."""
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or 0 in array.shape or (
            array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ValueError(f"a control picture is uint8 HxW, HxWx3 or HxWx4; got {array.dtype} "
                         f"{array.shape}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    if array.shape[2] == 4:
        alpha = array[:, :, 3:].astype(np.float32) / 255.0
        blended = array[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return blended.clip(0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def control_picture(image: Any) -> np.ndarray:
    """A unit's picture (PIL) as uint8 HxWx3, its transparent parts white as the extension's
    HWC3 makes them; an opaque one is only converted (no blend to run)."""
    if image.has_transparency_data:
        return hwc3(np.asarray(image.convert("RGBA")))
    return np.asarray(image.convert("RGB"))


def preprocess(module: str, image: Any, *, threshold_a: float | None = None,
               threshold_b: float | None = None, resolution: int | None = None,
               seed: int | None = None, device: Device | None = None) -> np.ndarray:
    """The control map of `image` by `module` (uint8 HxWx3). threshold_a / threshold_b: the
    module's settings (None, the extension's -1 or a value off its slider: its default).
    `resolution`: the extension's processor_res (the short side the picture is scaled to
    first, for the modules that take one; -1: 512); None: the picture's own size. ValueError
    naming the module or setting that is wrong. `module` may be one of MODULE_ALIASES.
    `seed`: the numpy seed of a random module (shuffle; the extension's seed + subseed,
    0..2**32 - 1); None: fresh noise."""
    module = module_name(module)
    found = PREPROCESSORS.get(module)
    if found is None:
        close = difflib.get_close_matches(str(module), [*PREPROCESSORS, *MODULE_ALIASES], n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown preprocessor {module!r}{guess}; the modules are "
                         f"{', '.join(PREPROCESSORS)} (or the extension's names "
                         f"{', '.join(MODULE_ALIASES)})")
    settings = []
    for name, given, slider in (("threshold_a", threshold_a, found.threshold_a),
                                ("threshold_b", threshold_b, found.threshold_b)):
        if slider is not None:
            try:
                settings.append(slider.pick(given))
            except ValueError:
                raise ValueError(f"{module}: {name} must be a finite number, got "
                                 f"{given!r}") from None
    picture = hwc3(image)
    extra = {"seed": seed} if found.seeded else {}
    if resolution is None or not found.resolution:
        return found.run(picture, *settings, device=device, **extra)
    wanted = 512 if found.resolution == "scale512" else int(RESOLUTION.pick(resolution))
    padded, remove_pad = resize_with_pad(picture, wanted)
    if found.resolution in ("scale", "scale512"):
        return found.run(remove_pad(padded), *settings, device=device, **extra)
    return remove_pad(found.run(padded, *settings, device=device, **extra))
