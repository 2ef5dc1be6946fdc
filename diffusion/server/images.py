"""Images over the API: base64 in and out, PNGs with infotext, previews, WebUI output layout."""

from __future__ import annotations

import base64
import binascii
import io
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..imaging import eight_bit
from ..infotext import PNG_KEY, format_infotext, next_sequence_number, save_png

__all__ = [
    "MAX_REQUEST_PIXELS",
    "ImageError",
    "PixelBudget",
    "decode_image",
    "encode_png",
    "png_info",
    "prepare_mask",
    "save_output",
    "webui_parameters",
]

_DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,", re.IGNORECASE)


class ImageError(ValueError):
    """A request's image could not be used; the message says which field and why."""


# the pixels one request's pictures may come to, decoded: Pillow's decompression-bomb limit
# for one picture (13377x13377), here for them all. A flat 13000x13000 PNG is 0.5 MB; a 50 MiB
# body of them would otherwise decode to 50 GB
MAX_REQUEST_PIXELS = 178_956_970


class PixelBudget:
    """The pixels left to a request's pictures; `take` refuses (ImageError) the picture that
    would go past `limit` (None: MAX_REQUEST_PIXELS), from its header, before it is
    decoded."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit, self.used = MAX_REQUEST_PIXELS if limit is None else limit, 0

    def take(self, size: tuple[int, int], what: str) -> None:
        self.used += size[0] * size[1]
        if self.used > self.limit:
            raise ImageError(f"{what} ({size[0]}x{size[1]}) takes the request's pictures to "
                             f"{self.used:,} pixels, over this server's limit of "
                             f"{self.limit:,}; send fewer or smaller pictures")


def decode_image(text: str, what: str, budget: PixelBudget | None = None) -> Any:
    """A PIL image from base64 (a `data:image/...;base64,` prefix is allowed); with `budget`,
    its pixels taken from it before it is decoded."""
    from PIL import Image

    if not isinstance(text, str) or not text.strip():
        raise ImageError(f"{what} is empty; send a base64-encoded PNG or JPEG")
    payload = _DATA_URL.sub("", text.strip(), count=1)
    try:
        raw = base64.b64decode(payload, validate=False)
        if not raw:
            raise ValueError("no data")
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"{what} is not valid base64 ({exc}); send the image file's bytes "
                         "base64-encoded, optionally prefixed with data:image/png;base64,"
                         ) from None
    try:
        image = Image.open(io.BytesIO(raw))
        if budget is not None:
            budget.take(image.size, what)
        image.load()
    except ImageError:  # the budget's: it says what to do
        raise
    except Image.UnidentifiedImageError:  # its text names only the BytesIO object
        raise ImageError(f"{what} decodes from base64 but is not a readable image (no format "
                         "Pillow reads); send a PNG, JPEG or WebP file") from None
    except (OSError, Image.DecompressionBombError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{what} decodes from base64 but is not a readable image ({exc}); "
                         "send a PNG, JPEG or WebP file") from None
    return eight_bit(image)


def encode_png(image: np.ndarray, infotext: str | None = None) -> str:
    """An (H, W, 3) uint8 image as base64 PNG text, carrying `infotext` in `parameters`."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if infotext is not None:
        info.add_text(PNG_KEY, infotext)
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image)).save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def prepare_mask(mask: Any, *, rounded: bool = True) -> Any:
    """An API mask as the 'L' mask the WebUI inpaints with (white = repaint; processing.py's
    create_binary_mask): an RGBA picture whose alpha is not opaque all over (a sketch: the
    alpha marks the painted part) by its alpha, above 128 white and the rest black (its levels
    as they are without `rounded`, the request's mask_round); any other picture by its gray
    levels. The inversion (inpainting_mask_invert) and the blur ("Mask blur") are the
    pipeline's (diffusion.pipelines.inpaint_plan), which writes them into the infotext."""
    if mask.mode == "RGBA" and mask.getextrema()[-1] != (255, 255):
        mask = mask.getchannel("A")
        if rounded:
            mask = mask.point(lambda value: 255 if value > 128 else 0)
    return mask.convert("L")


def png_info(image: Any) -> tuple[str, dict[str, Any]]:
    """(the `parameters` text or "", the other text chunks) of a decoded image."""
    items = {k: v for k, v in image.info.items() if isinstance(v, (str, int, float))}
    text = items.pop(PNG_KEY, "")
    return str(text), items


def save_output(image: np.ndarray, settings: dict[str, Any], outputs: Path,
                kind: str) -> Path:
    """Save like the WebUI: `<outputs>/<kind>-images/YYYY-MM-DD/00001-<seed>.png`, atomically,
    with the image's infotext; numbers continue after the highest in that folder."""
    folder = outputs / f"{kind}-images" / datetime.now().strftime("%Y-%m-%d")
    folder.mkdir(parents=True, exist_ok=True)
    number = next_sequence_number(folder)
    seed = int(settings["seed"])
    text = format_infotext(settings)
    while not save_png(image, path := folder / f"{number:05d}-{seed}.png", infotext=text,
                       overwrite=False):
        number += 1
    return path


# our parse_infotext names -> the WebUI's parse_generation_parameters keys
# the WebUI's PNG-info names where they are not the infotext's own fields
_PNG_INFO_KEYS = {"prompt": "Prompt", "negative_prompt": "Negative prompt",
                  "width": "Size-1", "height": "Size-2",
                  "hires_denoise": "Denoising strength"}

# settings that are text, never a "WxH" size to split, whatever they say
_TEXTS = ("prompt", "negative_prompt", "hires_prompt", "hires_negative_prompt")

# What the WebUI's parse_generation_parameters (modules/infotext_utils.py) fills in for a field
# an infotext leaves out, in its order, where the field is one of ours: each is what a picture
# made here without that field was made with. Left out: hypernetworks, the schedule's sigma and
# rho overrides, the VAE's tiling, FP8 weights and "Refiner switch by sampling steps", which
# this server does not have, and old infotexts' "First pass size" rewritten as a hires resize.
_WEBUI_DEFAULTS: dict[str, Any] = {
    "Clip skip": "1", "Hires resize-1": 0, "Hires resize-2": 0,
    "Hires sampler": "Use same sampler", "Hires schedule type": "Use same scheduler",
    "Hires checkpoint": "Use same checkpoint", "Hires prompt": "", "Hires negative prompt": "",
    "Mask mode": "Inpaint masked", "Masked content": "original",
    "Inpaint area": "Whole picture", "Masked area padding": 32, "RNG": "GPU",
    "Schedule type": "Automatic"}


def webui_parameters(text: str) -> dict[str, Any]:
    """An infotext parsed into the WebUI's PNG-info `parameters` dict ("Prompt", "Steps",
    "Size-1", "Clip skip", ...), a "WxH" value split as its "Size" is ("Hires resize-1" and
    "-2"), with the WebUI's values for the fields it leaves out (_WEBUI_DEFAULTS); {} for an
    image without one."""
    from ..infotext import WEBUI_FIELDS, parse_infotext

    if not text.strip():
        return {}
    out: dict[str, Any] = {}
    for key, value in parse_infotext(text).items():
        name = _PNG_INFO_KEYS.get(key) or WEBUI_FIELDS.get(key, key)
        if key == "clip_skip":
            out[name] = str(value + 1)
        elif key == "rng":
            out[name] = "CPU" if value == "torch" else value
        elif isinstance(value, bool):  # "Tiling": the text the WebUI keeps, "True"
            out[name] = str(value)
        elif (size := _size_of(value)) and key not in _TEXTS:
            out[f"{name}-1"], out[f"{name}-2"] = size
        else:
            out[name] = value
    return {**out, **{k: v for k, v in _WEBUI_DEFAULTS.items() if k not in out}}


def _size_of(value: Any) -> tuple[Any, ...] | None:
    """(width, height) of a parsed size ("Hires resize", "Seed resize from") or of a "WxH" text
    (a field we do not read, "First pass size"), which the WebUI splits; None for any other."""
    if isinstance(value, tuple):
        return value
    found = re.fullmatch(r"(\d+)x(\d+)", value) if isinstance(value, str) else None
    return None if found is None else found.groups()
