"""The WebUI's "SD upscale" script (img2img) through the API: `script_args` are (info, overlap,
upscaler_index, scale_factor). The init image is upscaled by the named upscaler (its index in
/sdapi/v1/upscalers, or its name; "None" leaves the size), cut into tiles of the request's
width x height that overlap by `overlap` px, each tile is one img2img request on the queue, and
the tiles are pasted back with the overlaps blended (the WebUI's `images.split_grid` and
`combine_grid`). Each of n_iter runs gives one picture; the tiles' seeds count up from the
request's seed (+ the run's number), as the WebUI's loop sets them."""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import json
import math
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from ....upscalers.by_name import upscale, upscaler_names
from ...images import decode_image, encode_png
from ..generation import RequestError
from ..schemas import Txt2ImgRequest

__all__ = ["ARG_LABELS", "Tile", "combine_grid", "run_sd_upscale", "split_grid"]

MAX_TILES = 100  # the most requests one call queues (as many as n_iter's limit)
Generate = Callable[[Txt2ImgRequest], Awaitable[dict[str, Any]]]
Check = Callable[[Txt2ImgRequest], None]
Queue = Callable[[Callable[..., Any]], Awaitable[Any]]  # the job is called with device=
Tile = tuple[int, int, Any]  # x, y, the PIL tile

ARG_LABELS: tuple[tuple[str, Any], ...] = (
    ("Info", None), ("Tile overlap", 64), ("Upscaler", "None"), ("Scale Factor", 2.0))


def grid_shape(size: tuple[int, int], tile_w: int, tile_h: int, overlap: int
               ) -> tuple[int, int]:
    """(columns, rows) of the tiles split_grid cuts a picture of `size` into: at least one (a
    picture smaller than a tile: one tile, the rest black, as there)."""
    w, h = size
    return (max(1, math.ceil((w - overlap) / (tile_w - overlap))),
            max(1, math.ceil((h - overlap) / (tile_h - overlap))))


def split_grid(image: Any, tile_w: int, tile_h: int, overlap: int) -> list[list[Tile]]:
    """`image`'s tiles row by row, as the WebUI's split_grid places them: as few as cover it
    with `overlap` px shared, spread evenly, the last flush with the right and bottom edges."""
    w, h = image.size
    cols, rows = grid_shape(image.size, tile_w, tile_h, overlap)
    dx = (w - tile_w) / (cols - 1) if cols > 1 else 0
    dy = (h - tile_h) / (rows - 1) if rows > 1 else 0
    grid = []
    for row in range(rows):
        y = int(row * dy)
        y = h - tile_h if y + tile_h >= h else y
        xs = [int(col * dx) for col in range(cols)]
        xs = [w - tile_w if x + tile_w >= w else x for x in xs]
        grid.append([(x, y, image.crop((x, y, x + tile_w, y + tile_h))) for x in xs])
    return grid


def combine_grid(grid: list[list[Tile]], size: tuple[int, int], overlap: int) -> Any:
    """The tiles pasted back as the WebUI's combine_grid does: each tile's first `overlap`
    columns (rows, for a row of tiles) fade in over what is there, linearly."""
    from PIL import Image

    width, height = size
    tile_w, tile_h = grid[0][0][2].size
    ramp = np.arange(overlap, dtype=np.float32) * 255 / max(overlap, 1)
    mask_w = Image.fromarray(np.repeat(ramp[None, :], tile_h, 0).astype(np.uint8), "L")
    mask_h = Image.fromarray(np.repeat(ramp[:, None], width, 1).astype(np.uint8), "L")
    combined = Image.new("RGB", (width, height))
    for row in grid:
        y = row[0][1]
        line = Image.new("RGB", (width, tile_h))
        for x, _, tile in row:
            if x == 0 or overlap == 0:
                line.paste(tile, (x, 0))
                continue
            line.paste(tile.crop((0, 0, overlap, tile_h)), (x, 0), mask=mask_w)
            line.paste(tile.crop((overlap, 0, tile_w, tile_h)), (x + overlap, 0))
        if y == 0 or overlap == 0:
            combined.paste(line, (0, y))
            continue
        combined.paste(line.crop((0, 0, width, overlap)), (0, y), mask=mask_h)
        combined.paste(line.crop((0, overlap, width, tile_h)), (0, y + overlap))
    return combined


def _png(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _fitted(image: Any, width: int, height: int) -> Any:
    """A tile's picture at the tile's size (a model that rounds sizes may return another)."""
    from PIL import Image

    image = image.convert("RGB")
    return image if image.size == (width, height) else image.resize(
        (width, height), Image.Resampling.LANCZOS)


def _arguments(args: list[Any], width: int, height: int) -> tuple[int, str, float]:
    given = list(args) + [default for _, default in ARG_LABELS[len(args):]]
    _, overlap, upscaler, scale = given[:4]
    if min(width, height) < 8:
        raise RequestError(f"SD upscale's tiles are the request's width x height, each side at "
                           f"least 8 px; got {width}x{height}")
    names = upscaler_names()
    if isinstance(upscaler, int) and not isinstance(upscaler, bool):
        if not 0 <= upscaler < len(names):
            raise RequestError(f"script_args[2] (Upscaler) {upscaler} is not an index of "
                               f"/sdapi/v1/upscalers' {len(names)} upscalers: "
                               f"{', '.join(names)}")
        upscaler = names[upscaler]
    lower = [name.lower() for name in names]
    if not isinstance(upscaler, str) or upscaler.lower() not in lower:
        raise RequestError(f"script_args[2] (Upscaler) {upscaler!r} is not one of this "
                           f"server's upscalers: {', '.join(names)}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not (
            0 <= overlap < min(width, height)):
        raise RequestError(f"script_args[1] (Tile overlap) must be a whole number of pixels "
                           f"from 0 to less than the tile's {width}x{height}, got {overlap!r}")
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 1 <= scale <= 8:
        raise RequestError(f"script_args[3] (Scale Factor) must be a number from 1 to 8, got "
                           f"{scale!r}")
    return overlap, names[lower.index(upscaler.lower())], float(scale)


def _check_tiles(size: tuple[int, ...], width: int, height: int, overlap: int,
                 runs: int) -> None:
    cols, rows = grid_shape((size[0], size[1]), width, height, overlap)
    if cols * rows * runs > MAX_TILES:
        raise RequestError(f"SD upscale makes {cols * rows} tiles x {runs} runs, over this "
                           f"server's limit of {MAX_TILES} requests; lower the scale factor "
                           "or n_iter, or raise width and height")


async def run_sd_upscale(body: Txt2ImgRequest, kind: str, args: list[Any],
                         generate: Generate, check: Check, queue: Queue | None = None
                         ) -> dict[str, Any]:
    """One upscaled picture per n_iter; every tile's request is checked with `check` before
    the first is queued (RequestError naming the bad argument). The upscaler runs through
    `queue` (on the worker's queue, one at a time with generation, called with the worker's
    device=; else on a thread, on the upscaler's device)."""
    if kind != "img2img":
        raise RequestError("SD upscale is an img2img script; send it to /sdapi/v1/img2img")
    width, height = body.width or 512, body.height or 512
    overlap, upscaler, scale = _arguments(args, width, height)
    init_images = getattr(body, "init_images", None)
    if not init_images:
        raise RequestError("init_images is empty; SD upscale upscales the first init image")
    from PIL import Image

    image = decode_image(init_images[0], "init_images[0]").convert("RGB")
    # the tiles counted before the upscale (the size upscale() gives), so that a picture
    # that would make too many is refused before its upscale takes memory and time
    size = image.size if upscaler == "None" else tuple(int(side * scale) // 8 * 8
                                                        for side in image.size)
    _check_tiles(size, width, height, overlap, body.n_iter)
    if upscaler != "None":
        pixels = np.asarray(image)
        try:
            job = functools.partial(upscale, pixels, upscaler, scale)
            out = await (queue(job) if queue is not None else asyncio.to_thread(job))
        except ValueError as exc:
            raise RequestError(f"SD upscale: {exc}") from None
        image = Image.fromarray(out)
    _check_tiles(image.size, width, height, overlap, body.n_iter)  # a model's own size
    grid = split_grid(image, width, height, overlap)
    seed = secrets.randbelow(4294967294) if body.seed == -1 else body.seed
    base = body.model_copy(update={"script_name": None, "script_args": [], "n_iter": 1,
                                   "batch_size": 1, "send_images": True})
    check(base.model_copy(update={"seed": seed, "init_images": [_png(grid[0][0][2])]}))
    tiles = [tile for row in grid for _, _, tile in row]
    pictures, infos, parameters = [], [], None
    for run in range(body.n_iter):
        answers = []
        for number, tile in enumerate(tiles):
            # the WebUI's loop: a batch of batch_size tiles from seed s, then s + 1 next
            cell = base.model_copy(update={
                "seed": seed + run + number // body.batch_size + number % body.batch_size,
                "init_images": [_png(tile)]})
            answers.append(await generate(cell))
            if json.loads(answers[-1]["info"]).get("interrupted"):
                break
        parameters = parameters or answers[0]["parameters"]
        infos.append(json.loads(answers[0]["info"]))
        done = iter(_fitted(decode_image(a["images"][0], "tile"), width, height)
                    for a in answers)
        blank = Image.new("RGB", (width, height))  # after an interrupt, as in the WebUI
        grid = [[(x, y, next(done, blank)) for x, y, _ in row] for row in grid]
        pictures.append(combine_grid(grid, image.size, overlap))
        if json.loads(answers[-1]["info"]).get("interrupted"):
            infos[-1]["interrupted"] = True
            break
    extra = f", SD upscale overlap: {overlap}, SD upscale upscaler: {upscaler}"
    texts = [info["infotexts"][0] + extra for info in infos]
    merged = {**infos[0], "infotexts": texts, "width": image.size[0],
              "height": image.size[1], "all_seeds": [seed + run for run in range(len(infos))],
              "interrupted": any(info.get("interrupted") for info in infos)}
    images = [encode_png(np.asarray(p), text) for p, text in zip(pictures, texts, strict=True)]
    parameters = {**(parameters or {}), "script_name": body.script_name,
                  "script_args": body.script_args}
    return {"images": images if body.send_images else [], "parameters": parameters,
            "info": json.dumps(merged)}
