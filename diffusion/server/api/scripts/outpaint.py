"""The WebUI's "Poor man's outpainting" script (img2img) through the API: `script_args` are
(pixels to expand, mask blur, masked content, directions), e.g. [128, 4, 0, ["left", "up"]].

As the WebUI's script does it: the picture is grown by `pixels` on each side asked (the new
size rounded up to a multiple of 64, the extra shared out between the sides asked), the new
border masked (the mask reaching `2 * mask blur` into the picture, blurred by `2 * mask
blur`), the grown picture cut into tiles of the request's width x height overlapping by
`pixels`, and each tile that reaches into the border inpainted as one request on the queue
("Inpaint area: Whole picture", seed + 1 per tile); the tiles inside the picture stay as they
are, and the tiles are joined back with the WebUI's blended seams. The WebUI's latent mask
(a second, narrower mask for the latent) has no counterpart here: the one mask does both."""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ...images import ImageError, decode_image, encode_png
from ..generation import RequestError
from ..schemas import Img2ImgRequest, Txt2ImgRequest

__all__ = ["ARG_LABELS", "DIRECTIONS", "Check", "Generate", "Grid", "check_directions",
           "combine_grid", "grown", "run_poor_mans", "split_grid", "whole"]

Generate = Callable[[Txt2ImgRequest], Awaitable[dict[str, Any]]]
Check = Callable[[Txt2ImgRequest], None]

DIRECTIONS = ("left", "right", "up", "down")
ARG_LABELS: tuple[tuple[str, Any], ...] = (
    ("Pixels to expand", 128), ("Mask blur", 4), ("Masked content", "fill"),
    ("Outpainting direction", list(DIRECTIONS)))
# the WebUI's "Masked content" choices, by index (its Radio is type="index")
FILLS = ("fill", "original", "latent noise", "latent nothing")
MAX_PIXELS = 256  # the UI's slider's range: 8 to 256
MAX_TILES = 100  # the most requests one call queues (as many as n_iter's limit)


@dataclass
class Grid:
    """The WebUI's images.Grid: rows of (y, height, [[x, width, tile], ...])."""

    tile_w: int
    tile_h: int
    image_w: int
    image_h: int
    overlap: int
    tiles: list[list[Any]] = field(default_factory=list)


def split_grid(image: Image.Image, tile_w: int, tile_h: int, overlap: int) -> Grid:
    """`image` cut into tiles of tile_w x tile_h overlapping by `overlap` (images.split_grid)."""
    w, h = image.size
    cols = max(1, math.ceil((w - overlap) / (tile_w - overlap)))
    rows = max(1, math.ceil((h - overlap) / (tile_h - overlap)))
    dx = (w - tile_w) / (cols - 1) if cols > 1 else 0
    dy = (h - tile_h) / (rows - 1) if rows > 1 else 0
    grid = Grid(tile_w, tile_h, w, h, overlap)
    for row in range(rows):
        y = int(row * dy)
        if y + tile_h >= h:
            y = h - tile_h
        row_tiles = []
        for col in range(cols):
            x = int(col * dx)
            if x + tile_w >= w:
                x = w - tile_w
            row_tiles.append([x, tile_w, image.crop((x, y, x + tile_w, y + tile_h))])
        grid.tiles.append([y, tile_h, row_tiles])
    return grid


def combine_grid(grid: Grid) -> Image.Image:
    """The tiles joined back, each seam a linear blend over `overlap` (images.combine_grid)."""
    ramp = np.arange(grid.overlap, dtype=np.float32) * 255 / max(grid.overlap, 1)
    mask_w = Image.fromarray(np.repeat(ramp.reshape(1, -1), grid.tile_h, 0).astype(np.uint8),
                             "L")
    mask_h = Image.fromarray(np.repeat(ramp.reshape(-1, 1), grid.image_w, 1).astype(np.uint8),
                             "L")
    combined = Image.new("RGB", (grid.image_w, grid.image_h))
    for y, h, row in grid.tiles:
        line = Image.new("RGB", (grid.image_w, h))
        for x, w, tile in row:
            if x == 0:
                line.paste(tile, (0, 0))
                continue
            line.paste(tile.crop((0, 0, grid.overlap, h)), (x, 0), mask=mask_w)
            line.paste(tile.crop((grid.overlap, 0, w, h)), (x + grid.overlap, 0))
        if y == 0:
            combined.paste(line, (0, 0))
            continue
        combined.paste(line.crop((0, 0, line.width, grid.overlap)), (0, y), mask=mask_h)
        combined.paste(line.crop((0, grid.overlap, line.width, h)), (0, y + grid.overlap))
    return combined


def whole(value: Any, name: str, low: int, high: int) -> int:
    # the range first: int() of an infinite or NaN float raises
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not low <= value <= high or value != int(value):
        raise RequestError(f"script_args: {name} must be a whole number from {low} to {high}, "
                           f"got {value!r}")
    return int(value)


def check_directions(directions: Any, name: str) -> list[str]:
    """The directions asked (a list of some of DIRECTIONS; one as text is taken too)."""
    if isinstance(directions, str):
        directions = [directions]
    if not isinstance(directions, list):
        raise RequestError(f"{name} must be a list of {', '.join(DIRECTIONS)}, got "
                           f"{directions!r}")
    if not directions:
        raise RequestError(f"{name} is empty; send some of {', '.join(DIRECTIONS)}")
    for direction in directions:
        if direction not in DIRECTIONS:
            raise RequestError(f"{name}: {direction!r} is not a direction; send some of "
                               f"{', '.join(DIRECTIONS)}")
    return directions


def _arguments(args: list[Any]) -> tuple[int, int, int, list[str]]:
    given = list(args) + [default for _, default in ARG_LABELS[len(args):]]
    pixels = whole(given[0], "Pixels to expand (script_args[0])", 8, MAX_PIXELS)
    blur = whole(given[1], "Mask blur (script_args[1])", 0, 64)
    fill = given[2]
    if isinstance(fill, str) and fill.lower() in FILLS:
        fill = FILLS.index(fill.lower())
    fill = whole(fill, "Masked content (script_args[2]: 0-3 or "
                  + ", ".join(f'"{f}"' for f in FILLS) + ")", 0, 3)
    directions = check_directions(given[3], "script_args[3] (Outpainting direction)")
    return pixels, blur, fill, directions


def grown(init: Image.Image, pixels: int, blur: int, directions: list[str]
          ) -> tuple[Image.Image, Image.Image, tuple[int, int, int, int]]:
    """(the grown picture, its mask: white = drawn, (left, up, right, down) added)."""
    left, right, up, down = (pixels if d in directions else 0 for d in DIRECTIONS)
    target_w = math.ceil((init.width + left + right) / 64) * 64
    target_h = math.ceil((init.height + up + down) / 64) * 64
    if left > 0:
        left = left * (target_w - init.width) // (left + right)
    if right > 0:
        right = target_w - init.width - left
    if up > 0:
        up = up * (target_h - init.height) // (up + down)
    if down > 0:
        down = target_h - init.height - up
    picture = Image.new("RGB", (target_w, target_h))
    picture.paste(init, (left, up))
    mask = Image.new("L", picture.size, "white")
    ImageDraw.Draw(mask).rectangle((
        left + (blur * 2 if left > 0 else 0), up + (blur * 2 if up > 0 else 0),
        target_w - right - (blur * 2 if right > 0 else 0),
        target_h - down - (blur * 2 if down > 0 else 0)), fill="black")
    return picture, mask, (left, up, right, down)


async def run_poor_mans(body: Txt2ImgRequest, args: list[Any], generate: Generate,
                        check: Check) -> dict[str, Any]:
    """The grown picture, its border tiles inpainted one request each; every tile's body is
    checked with `check` before the first is queued."""
    if not isinstance(body, Img2ImgRequest) or not body.init_images:
        raise RequestError("Poor man's outpainting is an img2img script: send it to "
                           "/sdapi/v1/img2img with init_images")
    pixels, blur, fill, directions = _arguments(args)
    try:
        init = decode_image(body.init_images[0], "init_images[0]").convert("RGB")
    except ImageError as exc:
        raise RequestError(str(exc)) from None
    picture, mask, (left, up, right, down) = grown(init, pixels, blur, directions)
    tile_w, tile_h = body.width or init.width, body.height or init.height
    if tile_w <= pixels or tile_h <= pixels:
        raise RequestError(f"width and height ({tile_w}x{tile_h}) are the tiles' size and must "
                           f"be over Pixels to expand ({pixels})")
    grid = split_grid(picture, tile_w, tile_h, pixels)
    masks = split_grid(mask, tile_w, tile_h, pixels)

    def inside(x: int, w: int, y: int, h: int) -> bool:
        return (x >= left and x + w <= picture.width - right and y >= up
                and y + h <= picture.height - down)

    work = [(tile, tile_mask) for (y, h, row), (_, _, mask_row) in zip(
        grid.tiles, masks.tiles, strict=True) for tile, tile_mask in zip(row, mask_row,
                                                                         strict=True)
            if not inside(tile[0], tile[1], y, h)]
    if len(work) > MAX_TILES:
        raise RequestError(f"Poor man's outpainting would queue {len(work)} tiles, over this "
                           f"server's limit of {MAX_TILES}; send a larger width and height")
    seed = body.seed if body.seed != -1 else secrets.randbelow(4294967294)
    base = body.model_copy(update={
        "script_name": None, "script_args": [], "send_images": True, "n_iter": 1,
        "batch_size": 1, "mask_blur": blur * 2, "inpainting_fill": fill,
        "inpaint_full_res": False, "inpainting_mask_invert": 0, "resize_mode": 0,
        "width": tile_w, "height": tile_h})
    cells = [base.model_copy(update={
        "init_images": [encode_png(np.asarray(tile[2]))],
        "mask": encode_png(np.asarray(tile_mask[2].convert("RGB"))), "seed": seed + i})
        for i, (tile, tile_mask) in enumerate(work)]
    for cell in cells:
        check(cell)
    answers = []
    for cell, (tile, _) in zip(cells, work, strict=True):
        answers.append(await generate(cell))
        tile[2] = decode_image(answers[-1]["images"][0], "a tile's picture").convert("RGB")
        if json.loads(answers[-1]["info"]).get("interrupted"):
            break  # the tiles left: the grown picture's, as they were cut
    info = json.loads(answers[0]["info"])
    text = f"{info['infotexts'][0]}, Script: Poor man's outpainting"
    info.update({"infotexts": [text], "prompt": body.prompt, "all_seeds": [seed],
                 "interrupted": any(json.loads(a["info"]).get("interrupted")
                                    for a in answers)})
    parameters = {**answers[0]["parameters"], "script_name": body.script_name,
                  "script_args": body.script_args}
    image = encode_png(np.asarray(combine_grid(grid)), text)
    return {"images": [image] if body.send_images else [], "parameters": parameters,
            "info": json.dumps(info)}
