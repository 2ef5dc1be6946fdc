"""The WebUI's "X/Y/Z plot" script through the API: `script_args` are its UI's values in
order (x_type, x_values, x_values_dropdown, y_..., z_..., draw_legend, include_lone_images,
include_sub_grids, no_fixed_seeds, margin_size, csv_mode, raw_mode; missing trailing ones take
the UI's defaults). Each cell is one request on the server's queue; the answer holds the grid
first (one per Z value side by side), then, with include_lone_images, each cell's picture."""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from PIL import Image

from ...images import ImageError, decode_image, encode_png
from ..generation import RequestError
from ..schemas import Txt2ImgRequest
from .axes import Axis, find_axis
from .grid import labelled_grid
from .values import split_values, typed_values

__all__ = ["ARG_LABELS", "run_xyz"]

# the most cells one plot queues (as many as n_iter's limit of images per job)
MAX_CELLS = 100
MAX_MARGIN = 500  # the WebUI's "Grid margins (px)" slider's maximum
Generate = Callable[[Txt2ImgRequest], Awaitable[dict[str, Any]]]
Check = Callable[[Txt2ImgRequest], None]

# (label, the UI's default) of each positional argument
ARG_LABELS: tuple[tuple[str, Any], ...] = (
    ("X type", 1), ("X values", ""), ("X values", []), ("Y type", 0), ("Y values", ""),
    ("Y values", []), ("Z type", 0), ("Z values", ""), ("Z values", []), ("Draw legend", True),
    ("Include Sub Images", False), ("Include Sub Grids", False), ("Keep -1 for seeds", False),
    ("Grid margins (px)", 0), ("Use text inputs instead of dropdowns", False),
    ("Use raw text lines", False))


def _axis_values(axis: Axis, text: Any, dropdown: Any, name: str, raw_lines: bool
                 ) -> list[Any]:
    if axis.label == "Nothing":
        return [0]
    if isinstance(dropdown, list) and dropdown and not str(text or "").strip():
        values = [str(v) for v in dropdown]  # the dropdown of an axis with choices
    elif isinstance(text, str):
        values = split_values(text, raw_lines=raw_lines)
    else:
        raise RequestError(f"{name} values must be text such as \"1, 2, 3\" or \"1-9 (+2)\", "
                           f"got {text!r}")
    try:
        typed = typed_values([v for v in values if v != ""], axis.kind, MAX_CELLS)
    except ValueError as exc:
        raise RequestError(f"{name} values ({axis.label}): {exc}") from None
    if not typed:
        raise RequestError(f"{name} values are empty for the axis {axis.label!r}; send values "
                           "such as \"1, 2, 3\"")
    return typed


def _margin(value: Any) -> int:
    """The grid margins (script_args[13]): a whole number of pixels, 0 to MAX_MARGIN (the
    WebUI's slider), else RequestError before any cell is queued."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            0 <= value <= MAX_MARGIN) or value != int(value):
        raise RequestError(f"script_args[13] (Grid margins (px)) must be a whole number from 0 "
                           f"to {MAX_MARGIN}, got {value!r}")
    return int(value)


def _seeded(axis: Axis, values: list[Any]) -> list[Any]:
    if axis.label not in ("Seed", "Var. seed"):
        return values
    return [secrets.randbelow(4294967294) if v == -1 else v for v in values]


def _quote(text: str) -> str:
    return json.dumps(text) if any(c in text for c in ",:\n") else text


async def run_xyz(body: Txt2ImgRequest, kind: str, args: list[Any], generate: Generate,
                  check: Check) -> dict[str, Any]:
    """The grid (and cells) for `body` with the script's `args`; every cell is checked with
    `check` before the first is queued (RequestError naming the axis)."""
    given = list(args) + [default for _, default in ARG_LABELS[len(args):]]
    (x_type, x_text, x_drop, y_type, y_text, y_drop, z_type, z_text, z_drop, draw_legend,
     lone_images, sub_grids, no_fixed_seeds, margin, _csv_mode, raw_lines) = given[:16]
    names = ("X", "Y", "Z")
    margin = _margin(margin)
    try:
        axes = [find_axis(kind, t, f"{n} type")
                for t, n in zip((x_type, y_type, z_type), names, strict=True)]
    except ValueError as exc:
        raise RequestError(str(exc)) from None
    values = [_axis_values(axis, text, drop, name, bool(raw_lines)) for axis, text, drop, name
              in zip(axes, (x_text, y_text, z_text), (x_drop, y_drop, z_drop), names,
                     strict=True)]
    base = body.model_copy(update={"script_name": None, "script_args": [],
                                   "send_images": True})
    if not no_fixed_seeds:  # the WebUI's fix_seed: every cell draws the same noise
        if base.seed == -1:
            base = base.model_copy(update={"seed": secrets.randbelow(4294967294)})
        values = [_seeded(axis, vals) for axis, vals in zip(axes, values, strict=True)]
    xs, ys, zs = values
    if len(xs) * len(ys) * len(zs) > MAX_CELLS:
        raise RequestError(f"the X/Y/Z plot has {len(xs)} x {len(ys)} x {len(zs)} cells, over "
                           f"this server's limit of {MAX_CELLS}; send fewer values")
    # 1. every cell's body, checked before any is queued
    cells: dict[tuple[int, int, int], Txt2ImgRequest] = {}
    for iz, z in enumerate(zs):
        for iy, y in enumerate(ys):
            for ix, x in enumerate(xs):
                cell = base
                for axis, value, vals, name in zip(axes, (x, y, z), values, names,
                                                   strict=True):
                    try:
                        cell = cell.model_copy(update=axis.update(cell, value, vals))
                        check(cell)
                    except (ValueError, ImageError) as exc:
                        raise RequestError(f"{name} values ({axis.label}) {value!r}: "
                                           f"{exc}") from None
                cells[ix, iy, iz] = cell
    # 2. the cells on the queue, the slowest axis to change outermost
    order = sorted(((ix, iy, iz) for ix in range(len(xs)) for iy in range(len(ys))
                    for iz in range(len(zs))),
                   key=lambda k: tuple(k[i] for i in sorted(
                       (2, 1, 0), key=lambda a: -axes[a].cost)))
    answers: dict[tuple[int, int, int], dict[str, Any]] = {}
    for key in order:  # after an interrupted cell (/sdapi/v1/interrupt) none is queued
        answers[key] = await generate(cells[key])
        if json.loads(answers[key]["info"]).get("interrupted"):
            break
    # 3. the grids, one per Z value, side by side under the Z labels
    labels = [[axis.label_of(v) for v in vals] for axis, vals in zip(axes, values, strict=True)]
    keys = [(ix, iy, iz) for iz in range(len(zs)) for iy in range(len(ys))
            for ix in range(len(xs))]
    pictures = {key: decode_image(answers[key]["images"][0], "a cell's picture")
                for key in keys if key in answers}
    size = next(iter(pictures.values())).size
    for key in keys:  # the cells an interrupt left out: black, as the WebUI leaves them
        pictures.setdefault(key, Image.new("RGB", size))
    legend = bool(draw_legend)
    grids = [labelled_grid([pictures[k] for k in keys if k[2] == iz], len(ys),
                           labels[0] if legend else [], labels[1] if legend else [],
                           margin) for iz in range(len(zs))]
    grid = grids[0] if len(zs) == 1 else labelled_grid(
        grids, 1, labels[2] if legend else [], [], margin)
    # the WebUI's include_sub_grids: each Z value's grid after the whole one
    shown = [grid, *(grids if sub_grids and len(zs) > 1 else [])]
    texts = [text if (isinstance(text, str) and text.strip()) or not isinstance(drop, list)
             else ", ".join(map(str, drop))
             for text, drop in ((x_text, x_drop), (y_text, y_drop), (z_text, z_drop))]
    return _response(body, axes, texts, [answers.get(k) for k in keys],
                     [pictures[k] for k in keys], shown, bool(lone_images))


def _response(body: Txt2ImgRequest, axes: list[Axis], texts: list[Any],
              answers: list[dict[str, Any] | None], pictures: list[Any], grids: list[Any],
              lone_images: bool) -> dict[str, Any]:
    """The answer; `answers` and `pictures` are the cells' (None: one an interrupt left out,
    whose lists hold None as the WebUI's)."""
    infos = [None if answer is None else json.loads(answer["info"]) for answer in answers]
    first = next(info for info in infos if info is not None)
    cell_texts = [None if info is None else info["infotexts"][0] for info in infos]
    fields = ["Script: X/Y/Z plot"]
    for axis, text, name in zip(axes, texts, "XYZ", strict=True):
        if axis.label != "Nothing":
            fields += [f"{name} Type: {_quote(axis.label)}", f"{name} Values: "
                       f"{_quote(str(text))}"]
    grid_text = f"{first['infotexts'][0]}, {', '.join(fields)}"
    images = [encode_png(np.asarray(grid), grid_text) for grid in grids]
    if lone_images:
        images += [encode_png(np.asarray(picture)) if answer is None else answer["images"][0]
                   for answer, picture in zip(answers, pictures, strict=True)]
    info = {**first, "infotexts": [grid_text] * len(grids) + cell_texts,
            "index_of_first_image": len(grids), "prompt": body.prompt,
            "interrupted": any(i is None or i["interrupted"] for i in infos)}
    for key in ("all_prompts", "all_negative_prompts", "all_seeds", "all_subseeds"):
        info[key] = [None if i is None else i[key][0] for i in infos]
    echoed = next(answer for answer in answers if answer is not None)["parameters"]
    parameters = {**echoed, "script_name": body.script_name,
                  "script_args": body.script_args}
    return {"images": images if body.send_images else [], "parameters": parameters,
            "info": json.dumps(info)}
