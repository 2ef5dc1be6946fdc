"""The images of a Bria FIBO 2 caption's text, drawn as FIBO 2's training drew them (diffusers'
`bria_fibo2.text_images.draw_text_image`): each `text_render` entry's text in one line (its
whitespace collapsed, lines of 256 characters), black on white in Pillow's built-in font at
size 20, 2 pixels of padding. Qwen3-VL reads them beside the caption, each entry marked by
the vision marker of its image. A character the built-in font lacks is refused: training drew
those in fonts of its own (Aileron, DejaVu Sans), not given here.
"""

from __future__ import annotations

import functools
from typing import Any

from PIL import Image, ImageDraw, ImageFont

__all__ = ["draw_text_image", "mark_text_images", "texts_of"]

_SIZE, _LINE, _PADDING, _SPACING = 20, 256, 2, 4


@functools.cache
def _font() -> ImageFont.FreeTypeFont:
    font = ImageFont.load_default(_SIZE)
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise ValueError("drawing a caption's text needs Pillow built with FreeType")
    return font


def _has_glyph(font: ImageFont.FreeTypeFont, character: str) -> bool:
    # a font without the glyph draws its "notdef" box, as for U+FFFE, which no font has
    notdef, mask = font.getmask("\ufffe"), font.getmask(character)
    return not (mask.size == notdef.size and bytes(mask) == bytes(notdef))


def texts_of(caption: Any) -> list[str]:
    """The texts of `caption`'s text_render entries that have text, in order."""
    entries = (caption.get("text_render") or []) if isinstance(caption, dict) else []
    return [e["text"] for e in entries
            if isinstance(e, dict) and isinstance(e.get("text"), str) and e["text"]]


def mark_text_images(caption: dict[str, Any], marker: str) -> dict[str, Any]:
    """`caption` with each text_render entry that has text given an "image_tokens" entry,
    `marker` (in place). diffusers: `BriaFibo2Pipeline._mark_text_images`."""
    for entry in caption.get("text_render") or []:
        if isinstance(entry, dict) and isinstance(entry.get("text"), str) and entry["text"]:
            entry["image_tokens"] = marker
    return caption


def draw_text_image(text: str) -> Image.Image:
    """`text` drawn as training drew it; ValueError for characters the built-in font lacks.
    diffusers: `draw_text_image(text)` (its one-font path)."""
    font = _font()
    line = " ".join(text.split())
    missing = [c for c in line if ord(c) >= 128 and not _has_glyph(font, c)]
    if missing:
        raise ValueError(f"the caption's text {''.join(missing[:8])!r} has characters Pillow's "
                         "built-in font lacks, which FIBO 2 was trained to see in fonts not "
                         "given here: leave them out of text_render")
    lines = [line[i: i + _LINE] for i in range(0, len(line), _LINE)] or [""]
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1), "white"))
    least = draw.textbbox((0, 0), "Ag", font=font)
    least_height = max(1, int(least[3] - least[1]))
    boxes = [draw.textbbox((0, 0), piece or " ", font=font) for piece in lines]
    heights = [max(least_height, int(box[3] - box[1])) for box in boxes]
    width = max([1, *(int(box[2] - box[0]) for box in boxes)])
    height = sum(heights) + _SPACING * (len(lines) - 1)
    image = Image.new("RGB", (width + 2 * _PADDING, height + 2 * _PADDING), "white")
    draw = ImageDraw.Draw(image)
    y = _PADDING
    for piece, box, line_height in zip(lines, boxes, heights, strict=True):
        draw.text((_PADDING - box[0], y - box[1]), piece, font=font, fill=(0, 0, 0))
        y += line_height + _SPACING
    return image
