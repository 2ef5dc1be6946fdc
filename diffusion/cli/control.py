"""The generation commands' ControlNet / T2I-Adapter options: one unit per --controlnet or
--t2i-adapter, in the order given; each per-unit option is given once (every unit) or once
per unit, in the same order.

    --controlnet canny.safetensors --control-image edges.png --control-module canny \\
    --controlnet depth --control-image depth.png --control-weight 1 0.6

Everything is checked before the model loads (paths, pictures, modules, numbers: one message
naming the option); the control models load after the model, on its device and in its dtype.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..pipelines.control import CONTROL_MODES, HR_OPTIONS
from ..pipelines.control_map import MAP_MODEL
from ..pipelines.control_spec import ControlSpec, parse_unit
from ..pipelines.mask_blur import blur_mask
from ..preprocessors import module_list
from ..preprocessors.registry import control_picture
from ..preprocessors.resize import RESIZE_MODES
from .options import number, whole

__all__ = ["add_control_options", "build_control_specs", "control_from_infotext",
           "load_control_units"]

# option -> (ControlSpec field, how its text reads, metavar)
_PER_UNIT: dict[str, tuple[str, Any, str]] = {
    "control_module": ("module", str, "NAME"), "control_weight": ("weight", number, "W"),
    "control_start": ("guidance_start", number, "F"), "control_end": ("guidance_end", number, "F"),
    "control_mode": ("control_mode", str, "MODE"), "control_resize": ("resize_mode", str, "MODE"),
    "control_processor_res": ("processor_res", whole, "PX"),
    "control_threshold_a": ("threshold_a", number, "A"),
    "control_threshold_b": ("threshold_b", number, "B"),
    "control_hr_option": ("hr_option", str, "WHICH"),
    "control_union_mode": ("union_mode", whole, "N"),
}


_OPTIONS = {"controlnet": "--controlnet", "t2i_adapter": "--t2i-adapter",
            "ip_adapter": "--ip-adapter"}


class _Unit(argparse.Action):
    """--controlnet / --t2i-adapter: (kind, PATH or NAME) appended to one list, so units keep
    the command line's order whatever their kind."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        units = list(getattr(namespace, "control_models", None) or [])
        units.append((self.const, values))
        namespace.control_models = units


def add_control_options(parser: argparse.ArgumentParser) -> None:
    """The ControlNet argument group of txt2img / img2img / inpaint."""
    group = parser.add_argument_group(
        "ControlNet and T2I-Adapter",
        "guide the picture with control maps (edges, depth, a drawing), as the WebUI's "
        "ControlNet extension; each --controlnet/--t2i-adapter adds one unit, and each "
        "--control-* option takes one value for all units or one per unit, in their order "
        "(listed after the option or the option repeated: --controlnet A --control-image "
        "a.png --controlnet B --control-image b.png)")
    group.add_argument("--controlnet", action=_Unit, const="controlnet", dest="control_models",
                       metavar="PATH|NAME",
                       help="a ControlNet: a diffusers folder, a single file (lllyasviel's "
                            "control_v11p_sd15_canny.pth/.safetensors), or a name in "
                            "--controlnet-dir; repeat for several units. None: the unit is "
                            "FLUX.1 Canny / Depth dev's own map (alone, --control-image "
                            "without --controlnet is that)")
    group.add_argument("--t2i-adapter", action=_Unit, const="t2i_adapter",
                       dest="control_models", metavar="PATH|NAME",
                       help="a T2I-Adapter (diffusers folder, or one file: TencentARC's "
                            "t2iadapter_*_sd15v2.pth or diffusers-named), a unit as "
                            "--controlnet")
    group.add_argument("--control-image", nargs="+", action="extend", metavar="PATH",
                       help="the unit's picture (img2img/inpaint: the init image when left out)")
    group.add_argument("--control-mask", nargs="+", action="extend", metavar="PATH",
                       help="the inpaint modules' mask (white: repaint), the picture's size "
                            "(inpaint: --mask when the unit takes the init image)")
    help_text = {
        "control_module": f"preprocessor making the map from the picture (none: the picture "
                          f"is the map): {', '.join(module_list())}",
        "control_weight": "how strongly the unit steers, 0..2 (1)",
        "control_start": "fraction of the steps where the unit starts acting (0)",
        "control_end": "fraction of the steps where it stops (1)",
        "control_mode": f"{' | '.join(CONTROL_MODES)} (or 0, 1, 2; Balanced)",
        "control_resize": f"how the map fits the picture: {' | '.join(RESIZE_MODES)} (or 0, "
                          "1, 2; Crop and Resize)",
        "control_processor_res": "short side the preprocessor works at (-1: 512; see "
                                 "--control-pixel-perfect)",
        "control_threshold_a": "the module's first setting (canny: low threshold 100; "
                               "threshold: level 127; blur_gaussian: sigma 9; tile_resample: "
                               "rate 1; -1: the default)",
        "control_threshold_b": "the module's second setting (canny: high threshold 200)",
        "control_hr_option": f"the hires fix passes the unit guides: {' | '.join(HR_OPTIONS)}",
        "control_union_mode": "a Union ControlNet's control type (FLUX InstantX / Shakker "
                              "Union: 0 canny, 1 tile, 2 depth, 3 blur, 4 pose, 5 gray, 6 low "
                              "quality; SDXL xinsir Union: 0 openpose, 1 depth, 2 soft edge / "
                              "scribble, 3 canny / lineart / MLSD, 4 normal, 5 segment, "
                              "ProMax also 6 tile, 7 inpaint)",
    }
    for dest, (_, kind, metavar) in _PER_UNIT.items():
        group.add_argument("--" + dest.replace("_", "-"), dest=dest, nargs="+", type=kind,
                           action="extend", metavar=metavar, help=help_text[dest])
    group.add_argument("--control-pixel-perfect", action="store_true",
                       help="preprocess at the resolution the picture's size needs (the "
                            "extension's Pixel Perfect), for every unit")


def _per_unit(values: list[Any] | None, count: int, option: str) -> list[Any]:
    if values is None:
        return [None] * count
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise ValueError(f"--{option.replace('_', '-')} has {len(values)} values for {count} "
                         "units; give one (all units) or one per --controlnet/--t2i-adapter")
    return list(values)


def _resolve(kind: str, text: str, folder: Any) -> str:
    """A unit's model: an existing path, else a name in --controlnet-dir (its path)."""
    if Path(text).exists():
        return text
    option = _OPTIONS.get(kind, "the ControlNet model")
    entry = None if folder is None else folder.find(text)
    if entry is None:
        where = "" if folder is None else " nor a model in --controlnet-dir: " + (
            ", ".join(folder.titles()) or "it holds none")
        raise ValueError(f"{option} {text!r} is not a file or folder{where}")
    return str(entry.path)


def build_control_specs(args: argparse.Namespace, open_image: Any) -> list[ControlSpec]:
    """The units the options ask for, checked (ValueError naming the option); an img2img
    unit without --control-image gets the init image (and inpaint's --mask, blurred)."""
    models = getattr(args, "control_models", None) or []
    if not models and getattr(args, "control_image", None):  # FLUX.1 Canny / Depth dev's own map
        models = [("controlnet", MAP_MODEL)]
    if not models:
        stray = [o for o in ("control_image", "control_mask", *_PER_UNIT)
                 if getattr(args, o, None)]
        if stray:
            raise ValueError(f"--{stray[0].replace('_', '-')} needs a unit: add --controlnet "
                             "PATH or --t2i-adapter PATH")
        return []
    from ..loaders.control.catalog import ControlModelDir

    folder = ControlModelDir(args.controlnet_dir) if args.controlnet_dir else None
    count = len(models)
    images = _per_unit(args.control_image, count, "control_image")
    masks = _per_unit(getattr(args, "control_mask", None), count, "control_mask")
    columns = {dest: _per_unit(getattr(args, dest), count, dest) for dest in _PER_UNIT}
    specs = []
    for i, (kind, text) in enumerate(models):
        mask = None if masks[i] is None else open_image(masks[i], "--control-mask", "L")
        if images[i] is not None:
            picture = control_picture(open_image(images[i], "--control-image", "RGBA"))
        elif getattr(args, "init_image", None):
            picture = open_image(args.init_image, "--init-image", "RGB")
            if mask is None and getattr(args, "mask", None):
                mask = _inpaint_mask(args, open_image)
        else:
            raise ValueError(f"unit {i} ({text}) has no picture: give --control-image PATH")
        settings = {field: columns[dest][i] for dest, (field, _, _) in _PER_UNIT.items()
                    if columns[dest][i] is not None}
        if settings.get("module") == "inpaint_only" and args.command != "inpaint":
            raise ValueError(f"ControlNet unit {i} ({text}): --control-module inpaint_only "
                             "outside inpainting (the extension's latent restore in "
                             "txt2img/img2img) is not supported here; use "
                             "inpaint_global_harmonious, or the inpaint command")
        path = MAP_MODEL if text == MAP_MODEL and kind in ("controlnet", "any") else _resolve(
            kind, text, folder)
        try:
            specs.append(ControlSpec(model=path,
                                     image=np.asarray(picture), module=settings.pop(
                                         "module", "none"),
                                     pixel_perfect=bool(args.control_pixel_perfect),
                                     mask=None if mask is None else np.asarray(mask),
                                     **settings))
        except ValueError as exc:
            raise ValueError(f"ControlNet unit {i} ({text}): {exc}") from None
        if path != MAP_MODEL:  # its config or tensor names: no model loads for another kind
            _kind_of(path, kind)
    args.control_kinds = [kind for kind, _ in models]
    return specs


def _kind_of(path: str, kind: str) -> str:
    """What the control model at `path` is (catalog.model_kind: its folder's config or its
    file's tensor names); ValueError in one line when it is none, or not the `kind` its
    option asks for ("any": --from-infotext's units, by name)."""
    from ..loaders.control.catalog import model_kind

    found = model_kind(path)
    if kind != "any" and found != kind:
        raise ValueError(f"{_OPTIONS[kind]} {path}: this is a {found.replace('_', '-')} "
                         f"model; pass it with {_OPTIONS[found]}")
    return found


def _inpaint_mask(args: argparse.Namespace, open_image: Any) -> Any:
    """inpaint's --mask as a unit takes it: inverted by --mask-invert and blurred by
    --mask-blur, as the extension's prepare_mask does with the WebUI's mask."""
    from PIL import ImageOps

    mask = open_image(args.mask, "--mask", "L")
    if args.mask_invert:
        mask = ImageOps.invert(mask)
    return blur_mask(mask, args.mask_blur, args.mask_blur)


def load_control_units(specs: list[ControlSpec], kinds: list[str], pipe: Any,
                       width: int, height: int, *, image_encoder: str | None = None,
                       seed: int | None = None) -> tuple[Any, ...]:
    """The units with their models loaded on the pipeline's device, in its UNet's dtype; an
    IP-Adapter unit (one --from-infotext found) reads its picture with `image_encoder`
    (--image-encoder). `seed`: the random preprocessors' numpy seed
    (control_spec.numpy_seed)."""
    from ..loaders.control.catalog import load_control_model
    from ..loaders.control.ip_adapter_file import load_image_encoder

    place = pipe.placement  # the device, and the dtype of its denoiser
    # a flow model under a memory mode places its ControlNets itself (FlowMemoryPlan.guests):
    # they load straight to host memory rather than to the GPU and back
    to_host = pipe.memory_mode is not None and pipe.capabilities.control_on_host
    encoder = None
    units = []
    for spec, kind in zip(specs, kinds, strict=True):
        if spec.model == MAP_MODEL:
            units.append(spec.unit(None, width=width, height=height, device=place.device,
                                   seed=seed))
            continue
        found = _kind_of(spec.model, kind)
        model = load_control_model(spec.model, dtype=place.dtype, device=place.device,
                                   to_host=to_host)
        if found == "ip_adapter" and encoder is None and image_encoder:
            encoder = load_image_encoder(image_encoder, dtype=place.dtype,
                                         device=place.device)
        units.append(spec.unit(model, width=width, height=height, device=place.device,
                               seed=seed, image_encoder=encoder))
    return tuple(units)


def control_from_infotext(args: argparse.Namespace, settings: dict[str, Any]) -> None:
    """The infotext's "ControlNet N" units as the options, when none is given here: models by
    name (found in --controlnet-dir), per-unit options left out taken from them."""
    texts = [settings[key] for key in sorted(
        (k for k in settings if k.startswith("ControlNet ") and k[11:].isdigit()),
        key=lambda k: int(k[11:]))]
    if not texts or getattr(args, "control_models", None):
        return
    units = []
    for text in texts:
        try:
            units.append(parse_unit(str(text)))
        except ValueError as exc:
            print(f"note: --from-infotext: {exc}; unit left out", file=sys.stderr)
    if not units:
        return
    args.control_models = [("any", unit["model"]) for unit in units]
    for dest, (field, _, _) in _PER_UNIT.items():
        if getattr(args, dest) is None and all(field in unit for unit in units):
            setattr(args, dest, [unit[field] for unit in units])
    if any(unit.get("pixel_perfect") for unit in units):
        args.control_pixel_perfect = True
