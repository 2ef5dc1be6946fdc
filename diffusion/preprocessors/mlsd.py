"""`mlsd`: straight line segments found by M-LSD (mlsd_large_512_fp32.pth in the annotator
folder's `mlsd/`), drawn one pixel wide in white on black, as the ControlNet extension's
`annotator/mlsd` draws them.

Its steps: the picture (RGB, a fourth plane of ones) in -1..1 through the network; the centre
map's sigmoid kept where it is the largest of its 3x3 neighbourhood; of the 200 strongest
centres, those scoring above threshold_a whose segment is longer than threshold_b (half-size
pixels) give the segment from their displacements, doubled to the picture's scale, truncated
to whole pixels and drawn as cv2.line draws (8-connected Bresenham, clipped to the picture).
A picture whose sides are not multiples of 16 (the network's stride) is run with its last row
and column repeated up to one and the map cut back (the extension pads to 64 first).
"""

from __future__ import annotations

import math

import numpy as np

from gpucore import Device
from gpustd import asarray

from ..models.annotators.mlsd import MobileLineSegmentDetector
from .annotators import annotator_model

__all__ = ["draw_line", "mlsd", "mlsd_segments"]

_TOP = 200  # centres considered, as the extension's decoder


def mlsd_segments(image: np.ndarray, score_threshold: float, distance_threshold: float, *,
                  device: Device | None = None) -> np.ndarray:
    """The segments of a uint8 HxWx3 picture (sides multiples of 16): float64 (N, 4) rows of
    (x start, y start, x end, y end) in pixels, before truncation. controlnet_aux:
    `mlsd.utils.pred_lines(image, model, image.shape[:2], score, distance)`."""
    model = annotator_model("mlsd", "mlsd", "mlsd_large_512_fp32.pth",
                            MobileLineSegmentDetector.from_state_dict, device)
    planes = np.concatenate([image.transpose(2, 0, 1), np.ones((1, *image.shape[:2]))])
    pixels = (planes[None].astype(np.float32) / np.float32(127.5)) - np.float32(1)
    maps = model(asarray(pixels, device=model.device)).numpy()[0]
    # 1. centres: the sigmoid where it is its 3x3 neighbourhood's largest, the strongest 200
    heat = (1 / (1 + np.exp(-maps[0]))).astype(np.float32)
    height, width = heat.shape
    around = np.pad(heat, 1, constant_values=-np.inf)
    largest = np.max([around[dy:dy + height, dx:dx + width] for dy in range(3)
                      for dx in range(3)], axis=0)
    heat = np.where(largest == heat, heat, np.float32(0)).ravel()
    order = np.argsort(-heat, kind="stable")[:_TOP]
    # 2. each centre's segment from its displacements, kept if strong and long enough
    rows, cols = np.divmod(order, width)
    shifts = maps[1:5].transpose(1, 2, 0)[rows, cols].astype(np.float64)
    lengths = np.sqrt(((maps[1:3] - maps[3:5]) ** 2).sum(axis=0)).ravel()[order]
    keep = (heat[order] > score_threshold) & (lengths > distance_threshold)
    starts = np.stack([cols, rows, cols, rows], axis=1)[keep]
    return 2 * (starts + shifts[keep])


def draw_line(canvas: np.ndarray, x1: int, y1: int, x2: int, y2: int) -> None:
    """Set the pixels of the segment to 255 as `cv2.line(canvas, (x1, y1), (x2, y2), 255, 1)`
    does: clipped to the canvas (OpenCV's clipLine), then 8-connected Bresenham from the
    left end (LineIterator)."""
    height, width = canvas.shape
    if not (0 <= x1 < width and 0 <= x2 < width and 0 <= y1 < height and 0 <= y2 < height):
        clipped = _clip(width, height, x1, y1, x2, y2)
        if clipped is None:
            return
        x1, y1, x2, y2 = clipped
    if x2 < x1:
        x1, y1, x2, y2 = x2, y2, x1, y1
    dx, dy = x2 - x1, abs(y2 - y1)
    step_y = -1 if y2 < y1 else 1
    steep = dy > dx
    major, minor = (dy, dx) if steep else (dx, dy)
    error, x, y = major - 2 * minor, x1, y1
    for _ in range(major + 1):
        canvas[y, x] = 255
        diagonal = error < 0
        error += 2 * major - 2 * minor if diagonal else -2 * minor
        if steep:
            y, x = y + step_y, x + diagonal
        else:
            x, y = x + 1, y + step_y * diagonal


def _clip(width: int, height: int, x1: int, y1: int, x2: int, y2: int
          ) -> tuple[int, int, int, int] | None:
    """OpenCV's clipLine: the segment's ends moved onto the canvas's edges (None: outside)."""
    right, bottom = width - 1, height - 1

    def code(x: int, y: int) -> int:
        return (x < 0) + (x > right) * 2 + (y < 0) * 4 + (y > bottom) * 8

    c1, c2 = code(x1, y1), code(x2, y2)
    if (c1 & c2) == 0 and (c1 | c2) != 0:
        if c1 & 12:
            edge = 0 if c1 < 8 else bottom
            x1, y1 = x1 + int((edge - y1) * (x2 - x1) / (y2 - y1)), edge
            c1 = (x1 < 0) + (x1 > right) * 2
        if c2 & 12:
            edge = 0 if c2 < 8 else bottom
            x2, y2 = x2 + int((edge - y2) * (x2 - x1) / (y2 - y1)), edge
            c2 = (x2 < 0) + (x2 > right) * 2
        if (c1 & c2) == 0 and (c1 | c2) != 0:
            if c1:
                edge = 0 if c1 == 1 else right
                x1, y1, c1 = edge, y1 + int((edge - x1) * (y2 - y1) / (x2 - x1)), 0
            if c2:
                edge = 0 if c2 == 1 else right
                x2, y2, c2 = edge, y2 + int((edge - x2) * (y2 - y1) / (x2 - x1)), 0
    return (x1, y1, x2, y2) if (c1 | c2) == 0 else None


def mlsd(image: np.ndarray, score_threshold: float, distance_threshold: float, *,
         device: Device | None = None) -> np.ndarray:
    """The extension's mlsd map of a uint8 HxWx3 picture: uint8 HxWx3, white segments."""
    height, width = image.shape[:2]
    rows, cols = (16 * math.ceil(side / 16) for side in (height, width))
    padded = np.pad(image, [(0, rows - height), (0, cols - width), (0, 0)], mode="edge")
    canvas = np.zeros((rows, cols), np.uint8)
    for segment in mlsd_segments(padded, score_threshold, distance_threshold, device=device):
        draw_line(canvas, *(int(value) for value in segment))
    return np.repeat(canvas[:height, :width, None], 3, axis=2)
