"""ADetailer's pass, on the worker over each picture of a job before it is saved (a
diffusion.server.jobs.pictures PictureHook): for each unit, the unit's YOLO model finds its
objects, they become masks (diffusion.detection.masks: their boxes, or a -seg model's own
masks) and each mask is inpainted in turn over the picture, as the extension's
`_postprocess_image` does: its own prompt ("[PROMPT]" the picture's, "[SEP]" one per
detection; empty: the picture's), its denoising strength, mask blur,
"Only masked" with its padding, masked content "original", the picture's seed, and its steps /
CFG / sampler / CLIP skip where the unit asks for them. The picture's infotext gains the unit's
fields as the extension writes them ("ADetailer model", "ADetailer confidence", ...; a second
unit's with " 2nd").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ...detection import detect
from ...detection.masks import box_masks, filter_boxes, prepare_masks, segment_masks
from ...pipelines.observer import Observer
from .adetailer_units import ADetailerModels, ADetailerUnit
from .generation import resolve_sampler

__all__ = ["ADetailerPass", "adetailer_fields"]


def _ordinal(n: int) -> str:
    return str(n) + ("th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(
        n % 10, "th"))


def adetailer_fields(unit: ADetailerUnit) -> dict[str, Any]:
    """The unit's infotext fields, as the extension's `extra_params` leaves them (its
    defaults dropped where it drops them)."""
    v = unit.values
    fields: dict[str, Any] = {
        "ADetailer model": unit.model, "ADetailer prompt": v["prompt"] or None,
        "ADetailer negative prompt": v["negative_prompt"] or None,
        "ADetailer confidence": v["confidence"],
        "ADetailer mask only top k largest": v["mask_k"] or None,
        "ADetailer mask min ratio": v["mask_min_ratio"] or None,
        "ADetailer mask max ratio": v["mask_max_ratio"] if v["mask_max_ratio"] != 1 else None,
        "ADetailer x offset": v["x_offset"] or None, "ADetailer y offset": v["y_offset"] or None,
        "ADetailer dilate erode": v["dilate_erode"],
        "ADetailer mask merge invert": v["mask_merge_invert"]
        if v["mask_merge_invert"] != "None" else None,
        "ADetailer mask blur": v["mask_blur"],
        "ADetailer denoising strength": v["denoising_strength"],
        "ADetailer inpaint only masked": v["inpaint_only_masked"] or None,
        "ADetailer inpaint padding": v["inpaint_only_masked_padding"]
        if v["inpaint_only_masked"] else None,
    }
    for use, names in (("use_inpaint_width_height", ("use inpaint width height",
                                                      "inpaint width", "inpaint height")),
                       ("use_steps", ("use separate steps", "steps")),
                       ("use_cfg_scale", ("use separate CFG scale", "CFG scale")),
                       ("use_sampler", ("use separate sampler", "sampler", "scheduler")),
                       ("use_clip_skip", ("use separate CLIP skip", "CLIP skip"))):
        if v[use]:
            keys = (use, *{"use_inpaint_width_height": ("inpaint_width", "inpaint_height"),
                           "use_steps": ("steps",), "use_cfg_scale": ("cfg_scale",),
                           "use_sampler": ("sampler", "scheduler"),
                           "use_clip_skip": ("clip_skip",)}[use])
            fields.update({f"ADetailer {name}": v[key] for name, key in zip(names, keys)})
    if fields.get("ADetailer scheduler") == "Use same scheduler":
        fields["ADetailer scheduler"] = None
    suffix = "" if unit.index == 0 else f" {_ordinal(unit.index + 1)}"
    return {key + suffix: value for key, value in fields.items() if value is not None}


def _prompt(text: str, original: str, number: int) -> str:
    if not text:
        return original
    parts = [part.strip() for part in text.split("[SEP]")]
    return parts[min(number, len(parts) - 1)].replace("[PROMPT]", original) or original


def _request(request: Any, unit: ADetailerUnit, picture: np.ndarray, mask: np.ndarray,
             settings: dict[str, Any], number: int) -> Any:
    """The inpaint request of one mask, from the picture's own request and settings."""
    from PIL import Image

    v = unit.values
    height, width = picture.shape[:2]
    if v["use_inpaint_width_height"] and v["inpaint_only_masked"]:
        width, height = v["inpaint_width"], v["inpaint_height"]
    changes: dict[str, Any] = dict(
        prompt=_prompt(v["prompt"], request.prompt, number),
        negative_prompt=_prompt(v["negative_prompt"], request.negative_prompt, number),
        init_image=Image.fromarray(picture), mask=Image.fromarray(mask),
        strength=v["denoising_strength"], mask_blur=v["mask_blur"],
        inpaint_full_res=v["inpaint_only_masked"],
        inpaint_full_res_padding=v["inpaint_only_masked_padding"], inpainting_fill=1,
        mask_invert=False, resize_mode=0, width=width, height=height, batch_size=1,
        seed=int(settings["seed"]), hires=None, hires_modules=None, refiner=None, control=())
    if v["use_steps"]:
        changes["steps"] = v["steps"]
    if v["use_cfg_scale"]:
        changes["cfg_scale"] = v["cfg_scale"]
    if v["use_sampler"]:
        scheduler = request.scheduler if v["scheduler"] == "Use same scheduler" \
            else v["scheduler"]
        changes["sampler"], changes["scheduler"] = resolve_sampler(v["sampler"], scheduler)
    if v["use_clip_skip"]:
        changes["clip_skip"] = v["clip_skip"] - 1
    return replace(request, **changes)


@dataclass(frozen=True)
class ADetailerPass:
    """The units of a job as its per-picture pass (a diffusion.server.jobs.pictures
    PictureHook, picklable: the models travel as their folder)."""

    units: tuple[ADetailerUnit, ...]
    models: ADetailerModels

    def __call__(self, picture: np.ndarray, settings: dict[str, Any], request: Any, pipe: Any,
                 observer: Observer) -> tuple[np.ndarray, dict[str, Any]]:
        """`picture` (made from `request` with `settings`) through each unit on `pipe`; one
        without detections is left as it is. A unit whose inpainting is interrupted (or
        skipped) is dropped whole, with the units after it: the picture is what the units
        before it made, its infotext theirs."""
        device = pipe.placement.device
        fields: dict[str, Any] = {}
        for unit in self.units:
            yolo = self.models.load(unit.path, device)
            found = detect(yolo, picture, confidence=unit.confidence)
            size = (picture.shape[1], picture.shape[0])
            keep = filter_boxes(found.boxes, found.scores, size,
                                min_ratio=unit.mask_min_ratio, max_ratio=unit.mask_max_ratio,
                                k=unit.mask_k, method=unit.mask_filter_method)
            shapes = box_masks(found.boxes[keep], size) if found.masks is None \
                else segment_masks(found.masks[keep], size)
            masks = prepare_masks(shapes,
                                  dilate_erode_by=unit.dilate_erode, x_offset=unit.x_offset,
                                  y_offset=unit.y_offset, merge_invert=unit.mask_merge_invert)
            detailed = picture
            for number, mask in enumerate(masks):
                inpaint = _request(request, unit, detailed, mask, settings, number)
                detailed = pipe.generate(inpaint, observer=observer).images[0]
                if observer.interrupted():
                    return picture, _with(settings, fields)
            picture = detailed
            if masks:
                fields.update(adetailer_fields(unit))
        return picture, _with(settings, fields)


def _with(settings: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    return {**settings, "adetailer": fields} if fields else settings
