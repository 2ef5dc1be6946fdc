"""The ControlNet extension's API units: `alwayson_scripts: {"controlnet": {"args": [unit,
...]}}` on txt2img / img2img, read as the extension reads them, into ControlSpecs.

A unit is a JSON object with the extension's fields (`internal_controlnet/args.py`
ControlNetUnit): enabled (default false: a unit without it is skipped, as there), image (or
the old input_image: base64, {"image", "mask"} or [image, mask]), mask / mask_image, module,
model, weight (0..2), resize_mode (a name or 0, 1, 2), processor_res, threshold_a,
threshold_b, guidance_start, guidance_end (or the old guidance), control_mode (a name or 0,
1, 2), pixel_perfect, hr_option; low_vram / lowvram and the extension's other fields are
accepted and ignored. A unit whose model is "None" (or left out) is the map a FLUX.1 Canny /
Depth dev model takes in its own input (its module preprocesses the picture as a unit's);
any other model refuses it. A unit that cannot run (an unknown model or module, no image, a weight
that is not a number in range, a field of the wrong type) is a RequestError naming
`alwayson_scripts.controlnet.args[i].field`: 422 before anything is queued.

An IP-Adapter is a unit as in the extension and Forge: its model an IP-Adapter file of the
--controlnet-dir, its module an IP-Adapter one (ip-adapter_clip_sd15, ip-adapter_clip_h, ...;
any other module with such a model, or such a module with another model, is refused naming
`module`), its picture read by one of the server's CLIP image encoders (`serve
--image-encoder`, chosen by diffusion.server.catalog.image_encoders).

On the worker (`control_units`), each spec's model (and image encoder) loads on the worker's
device (kept in a small cache) and its map is detected for the first pass's size.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ...loaders.control.catalog import ControlModelCache, ControlModelDir, model_kind
from ...loaders.control.ip_adapter_file import load_image_encoder
from ...loaders.errors import WeightsError
from ...pipelines.control_map import MAP_MODEL
from ...pipelines.control_spec import ControlSpec
from ...preprocessors.ip_adapter_modules import IP_ADAPTER_MODULES
from ...preprocessors.registry import PREPROCESSORS, control_picture, module_name
from ..catalog.image_encoders import ImageEncoders
from ..images import ImageError, PixelBudget, decode_image
from .generation import RequestError

__all__ = ["control_units", "parse_units", "script_args"]

SCRIPT = "controlnet"
_ALIASES = {"input_image": "image", "guidance": "guidance_end", "mask_image": "mask"}
_NUMBERS = ("weight", "threshold_a", "threshold_b", "guidance_start", "guidance_end")


def script_args(alwayson_scripts: dict[str, Any] | None) -> list[Any] | None:
    """The controlnet script's `args` (the WebUI matches script names in any case: webuiapi
    sends "ControlNet"), None when the body has none."""
    for name, value in (alwayson_scripts or {}).items():
        if name.lower() == SCRIPT:
            if not isinstance(value, dict) or not isinstance(value.get("args", []), list):
                raise RequestError(f"alwayson_scripts.{name} must be an object with a list "
                                   "'args' of ControlNet units")
            return value.get("args", [])
    return None


def _picture(value: Any, where: str, part: str = "image", *, over_white: bool = False,
             budget: PixelBudget | None = None) -> np.ndarray | None:
    """A unit's image field as uint8 HxWx3 (`part` "mask": the mask it carries, if any),
    None when empty; `over_white`: its transparent parts white, as the extension's HWC3 gives
    a unit's picture (a mask's alpha is left to mean what it means there)."""
    if isinstance(value, dict):
        value = value.get(part)
    elif isinstance(value, (list, tuple)):
        if not value:
            return None
        if isinstance(value[0], dict):
            value = value[0].get(part)
        else:
            value = value[0 if part == "image" else 1] if len(value) > (part != "image") \
                else None
    elif part != "image":
        return None  # a plain base64 string is the picture alone: it carries no mask
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RequestError(f"{where}: a base64-encoded picture, got {type(value).__name__}")
    try:
        image = decode_image(value, where, budget)
    except ImageError as exc:
        raise RequestError(str(exc)) from None
    return control_picture(image) if over_white else np.asarray(image.convert("RGB"))


@lru_cache(maxsize=64)
def _kind(path: Path, changed: int) -> str:
    """model_kind of a --controlnet-dir entry, read once per version of the file."""
    return model_kind(path)


def _encoder(raw: dict[str, Any], where: str, path: Path, encoders: ImageEncoders
             ) -> str | None:
    """The image encoder of an IP-Adapter unit (None for the others); RequestError naming
    `module` when the module and the model are not of one kind, or no encoder fits."""
    try:
        kind = _kind(path, path.stat().st_mtime_ns)
    except (WeightsError, OSError) as exc:
        raise RequestError(f"{where}.model: {raw.get('model')!r} cannot be read: "
                           f"{exc}") from None
    module = module_name(raw.get("module", "none"))
    if (kind == "ip_adapter") != (module in IP_ADAPTER_MODULES):
        if kind == "ip_adapter":
            raise RequestError(f"{where}.module: {module!r} makes a control map; model "
                               f"{raw.get('model')!r} is an IP-Adapter, whose module is one "
                               f"of {', '.join(IP_ADAPTER_MODULES)}")
        raise RequestError(f"{where}.module: {module!r} is an IP-Adapter module; model "
                           f"{raw.get('model')!r} is a {kind.replace('_', '-')}: name an "
                           "IP-Adapter model, or a preprocessor for this one")
    if kind != "ip_adapter":
        return None
    try:
        return str(encoders.choose(module, path))
    except (ValueError, WeightsError) as exc:
        raise RequestError(f"{where}.module: {exc}") from None


def _unit(raw: dict[str, Any], where: str, models: ControlModelDir,
          fallback: np.ndarray | None, encoders: ImageEncoders, inpainting: bool,
          fallback_mask: np.ndarray | None, budget: PixelBudget) -> ControlSpec | None:
    for alias, key in _ALIASES.items():
        if alias in raw:
            if key in raw:
                raise RequestError(f"{where}: both {alias!r} and {key!r}; send {key!r}")
            raw = {**raw, key: raw[alias]}
    enabled = raw.get("enabled", False)
    if not isinstance(enabled, bool):
        raise RequestError(f"{where}.enabled: true or false, got {enabled!r}")
    if not enabled:
        return None
    for key in ("module", "model", "hr_option"):
        if key in raw and not isinstance(raw[key], str):
            raise RequestError(f"{where}.{key}: a name (text), got {raw[key]!r}")
    for key in _NUMBERS:
        value = raw.get(key)
        if key in raw and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise RequestError(f"{where}.{key}: a number, got {value!r}")
    name = str(raw.get("model", "None"))
    no_model = name.strip() in ("", "None", "none")  # FLUX.1 Canny / Depth dev's own map
    entry = None if no_model else models.find(name)
    if entry is None and not no_model:
        listed = ", ".join(models.titles()) or "none (start the server with --controlnet-dir)"
        raise RequestError(f"{where}.model: {name!r} is not one of this server's ControlNet "
                           f"models: {listed}")
    image = _picture(raw.get("image"), f"{where}.image", over_white=True, budget=budget)
    mask = _picture(raw.get("mask"), f"{where}.mask", budget=budget) if raw.get("mask") else (
        None if image is None else _picture(raw.get("image"), f"{where}.image", "mask",
                                            budget=budget))
    module = module_name(raw.get("module", "none"))
    if module == "inpaint_only" and not inpainting:
        raise RequestError(f"{where}.module: inpaint_only outside inpainting (the extension's "
                           "latent restore in txt2img/img2img) is not supported here; use "
                           "inpaint_global_harmonious, or img2img with a mask")
    if image is None and fallback is not None:
        image, mask = fallback, fallback_mask if mask is None else mask
    if image is None:
        raise RequestError(f"{where}.image: missing; send the unit's picture base64-encoded")
    encoder = (_encoder(raw, where, entry.path, encoders)
               if entry is not None and module in PREPROCESSORS else None)
    processor_res = raw.get("processor_res", -1)
    if isinstance(processor_res, float) and processor_res.is_integer():
        processor_res = int(processor_res)
    settings = {key: raw[key] for key in (*_NUMBERS, "resize_mode", "control_mode",
                                           "pixel_perfect", "hr_option", "union_mode")
                if key in raw}
    try:
        return ControlSpec(model=MAP_MODEL if entry is None else str(entry.path), image=image,
                           module=module, processor_res=processor_res, image_encoder=encoder,
                           mask=None if mask is None else mask[..., 0] if mask.ndim == 3
                           else mask, **settings)
    except ValueError as exc:
        raise RequestError(f"{where}.{exc}") from None


def parse_units(args: list[Any], models: ControlModelDir, *,
                fallback: np.ndarray | None = None,
                encoders: ImageEncoders | None = None,
                inpainting: bool = False,
                fallback_mask: np.ndarray | None = None) -> tuple[ControlSpec, ...]:
    """The enabled units of the script's `args` as specs; `fallback`: the picture a unit
    without one takes (img2img: the init image, as the extension does); `encoders`: the
    image encoders IP-Adapter units may take; `inpainting`: whether the request has a mask
    (inpaint_only runs only there, where the extension makes it inpaint), `fallback_mask`
    that mask (uint8 HxW), which a unit taking the init image takes too."""
    encoders = encoders or ImageEncoders()
    budget = PixelBudget()  # every unit's pictures together
    specs = []
    for i, raw in enumerate(args):
        where = f"alwayson_scripts.controlnet.args[{i}]"
        if not isinstance(raw, dict):
            raise RequestError(f"{where}: a ControlNet unit is a JSON object, got "
                               f"{type(raw).__name__}")
        spec = _unit(raw, where, models, fallback, encoders, inpainting, fallback_mask,
                     budget)
        if spec is not None:
            specs.append(spec)
    return tuple(specs)


def control_units(specs: tuple[ControlSpec, ...], cache: ControlModelCache, pipe: Any,
                  width: int, height: int, seed: int | None = None) -> tuple[Any, ...]:
    """The units on the calling worker's device (runs on the worker); `seed`: the random
    preprocessors' numpy seed (control_spec.numpy_seed)."""
    place = pipe.placement  # the device, and the dtype of its denoiser
    units = []
    for spec in specs:
        if spec.model == MAP_MODEL:
            units.append(spec.unit(None, width=width, height=height, device=place.device,
                                   seed=seed))
            continue
        model = cache.get(spec.model, dtype=place.dtype, device=place.device)
        encoder = None if spec.image_encoder is None else cache.get(
            spec.image_encoder, dtype=place.dtype, device=place.device,
            loader=load_image_encoder)
        units.append(spec.unit(model, width=width, height=height, device=place.device,
                               seed=seed, image_encoder=encoder))
    return tuple(units)
