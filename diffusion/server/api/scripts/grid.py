"""The X/Y/Z plot's picture: cells in rows and columns (the WebUI's image_grid), with the X
labels above the columns and the Y labels left of the rows where any is not empty."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

__all__ = ["grid_margins", "labelled_grid"]


def _font(cell_width: int, cell_height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(8, (cell_width + cell_height) // 2 // 12))


def grid_margins(cell: tuple[int, int], x_labels: list[str], y_labels: list[str]
                 ) -> tuple[int, int]:
    """(left, top): the room the labels take (0 where an axis has no label text); the cells
    start at that corner."""
    font = _font(*cell)
    pad = max(2, cell[1] // 16)
    left = 0
    if any(y_labels):  # the WebUI's 3/4 of a cell, or the widest label's room
        left = max(cell[0] * 3 // 4, *(int(font.getbbox(text)[2]) + 2 * pad for text in y_labels))
    top = 0
    if any(x_labels):
        heights = [int(font.getbbox(text or " ")[3]) for text in x_labels]
        top = max(heights) + 2 * pad
    return left, top


def labelled_grid(cells: list[Image.Image], rows: int, x_labels: list[str],
                  y_labels: list[str], margin: int = 0) -> Image.Image:
    """`cells` (row by row, all the first one's size) in `rows` rows, `margin` px apart, with
    the labels drawn in the margins grid_margins gives."""
    width, height = cells[0].size
    columns = math.ceil(len(cells) / rows)
    left, top = grid_margins((width, height), x_labels, y_labels)
    grid = Image.new("RGB", (left + columns * width + (columns - 1) * margin,
                             top + rows * height + (rows - 1) * margin), "white")
    draw = ImageDraw.Draw(grid)
    font = _font(width, height)
    for column, text in enumerate(x_labels[:columns] if top else []):
        center = left + column * (width + margin) + width // 2
        draw.text((center, top // 2), text, fill="black", font=font, anchor="mm")
    for row, text in enumerate(y_labels[:rows] if left else []):
        middle = top + row * (height + margin) + height // 2
        draw.text((left // 2, middle), text, fill="black", font=font, anchor="mm")
    for index, cell in enumerate(cells):  # after the labels: a long one never covers a cell
        row, column = divmod(index, columns)
        grid.paste(cell.convert("RGB"), (left + column * (width + margin),
                                         top + row * (height + margin)))
    return grid
