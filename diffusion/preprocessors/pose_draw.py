"""The openpose map's drawing, pixel for pixel as OpenCV draws it (controlnet_aux's
`util.draw_bodypose`): each limb a filled ellipse (`cv2.ellipse2Poly` of one-degree steps,
filled by `cv2.fillConvexPoly`'s scanlines with its outline's 8-connected lines) in 60 % of
the limb's colour, then each joint a filled circle of radius 4 (`cv2.circle`'s midpoint
circle) in its colour.

    draw_body(canvas, keypoints)   # uint8 HxWx3, changed in place; keypoints as 0..1
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["COLOURS", "draw_body", "ellipse_polygon", "fill_circle", "fill_convex_polygon"]

COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0),
           (85, 255, 0), (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255),
           (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255), (170, 0, 255),
           (255, 0, 255), (255, 0, 170), (255, 0, 85))
_DRAWN_LIMBS = ((2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11),
                (2, 12), (12, 13), (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18))
_STICK = 4
# OpenCV's table of sines by whole degree (0..450), stored to seven decimals as floats
_SINES = np.round(np.sin(np.radians(np.arange(451))), 7).astype(np.float32).astype(np.float64)
_SHIFT = 16


def ellipse_polygon(centre: tuple[int, int], axes: tuple[int, int],
                    angle: int) -> list[tuple[int, int]]:
    """cv2.ellipse2Poly(centre, axes, angle, 0, 360, 1): the whole ellipse's points, rounded,
    repeats in a row dropped."""
    angle %= 360
    alpha, beta = _SINES[450 - angle], _SINES[angle]
    points: list[tuple[int, int]] = []
    for degree in range(361):
        x, y = axes[0] * _SINES[450 - degree], axes[1] * _SINES[degree]
        point = (round(centre[0] + x * alpha - y * beta), round(centre[1] + x * beta + y * alpha))
        if not points or point != points[-1]:
            points.append(point)
    return points if len(points) > 1 else [centre, centre]


def _clip(width: int, height: int, start: tuple[int, int], end: tuple[int, int]
          ) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """cv2.clipLine: the segment cut to the picture, its ends moved along it (None: it lies
    outside)."""
    (x1, y1), (x2, y2) = start, end
    right, bottom = width - 1, height - 1

    def code(x: int, y: int, rows: bool = True) -> int:
        return (x < 0) + (x > right) * 2 + ((y < 0) * 4 + (y > bottom) * 8 if rows else 0)

    c1, c2 = code(x1, y1), code(x2, y2)
    if (c1 & c2) == 0 and (c1 | c2) != 0:
        if c1 & 12:
            a = 0 if c1 < 8 else bottom
            x1 += int((a - y1) * (x2 - x1) / (y2 - y1))
            y1, c1 = a, code(x1, 0, rows=False)
        if c2 & 12:
            a = 0 if c2 < 8 else bottom
            x2 += int((a - y2) * (x2 - x1) / (y2 - y1))
            y2, c2 = a, code(x2, 0, rows=False)
        if (c1 & c2) == 0 and (c1 | c2) != 0:
            if c1:
                a = 0 if c1 == 1 else right
                y1 += int((a - x1) * (y2 - y1) / (x2 - x1))
                x1, c1 = a, 0
            if c2:
                a = 0 if c2 == 1 else right
                y2 += int((a - x2) * (y2 - y1) / (x2 - x1))
                x2, c2 = a, 0
    return None if c1 | c2 else ((x1, y1), (x2, y2))


def _line(canvas: np.ndarray, start: tuple[int, int], end: tuple[int, int],
          colour: Sequence[int]) -> None:
    """cv2.line's 8-connected pixels (its LineIterator, left to right, clipped first)."""
    height, width = canvas.shape[:2]
    if not (0 <= start[0] < width and 0 <= end[0] < width and 0 <= start[1] < height
            and 0 <= end[1] < height):
        clipped = _clip(width, height, start, end)
        if clipped is None:
            return
        start, end = clipped
    if end[0] < start[0]:
        start, end = end, start
    (x, y), (dx, dy) = start, (end[0] - start[0], end[1] - start[1])
    step_y = 1 if dy >= 0 else -1
    dy = abs(dy)
    major, minor = (dy, dx) if dy > dx else (dx, dy)
    error = major - 2 * minor
    for _ in range(major + 1):
        canvas[y, x] = colour
        diagonal = error < 0
        error += -2 * minor + (2 * major if diagonal else 0)
        if dy > dx:
            y += step_y
            x += 1 if diagonal else 0
        else:
            x += 1
            y += step_y if diagonal else 0


def _line_fixed(canvas: np.ndarray, start: tuple[int, int], end: tuple[int, int],
                colour: Sequence[int]) -> None:
    """OpenCV's Line2: an 8-connected line between points in 16-bit fixed point (the outline
    of a polygon drawn with a shift), stepping along the longer axis."""
    height, width = canvas.shape[:2]
    clipped = _clip(width << _SHIFT, height << _SHIFT, start, end)
    if clipped is None:
        return
    (x1, y1), (x2, y2) = clipped
    ax, ay = abs(x2 - x1), abs(y2 - y1)
    along_x = ax > ay
    if (x2 < x1 if along_x else y2 < y1):
        (x1, y1), (x2, y2) = (x2, y2), (x1, y1)
    longer = ax if along_x else ay
    slope = ((y2 - y1) if along_x else (x2 - x1)) << _SHIFT
    step = int(math.copysign(abs(slope) // (longer | 1), slope))  # C's division
    count = ((x2 - x1) if along_x else (y2 - y1)) >> _SHIFT
    half = 1 << (_SHIFT - 1)
    points = [((x2 + half) >> _SHIFT, (y2 + half) >> _SHIFT)]
    x1, y1 = x1 + half, y1 + half
    if along_x:
        points += [((x1 >> _SHIFT) + i, (y1 + i * step) >> _SHIFT) for i in range(count + 1)]
    else:
        points += [((x1 + i * step) >> _SHIFT, (y1 >> _SHIFT) + i) for i in range(count + 1)]
    for x, y in points:
        if 0 <= x < width and 0 <= y < height:
            canvas[y, x] = colour


def fill_convex_polygon(canvas: np.ndarray, points: Sequence[tuple[int, int]],
                        colour: Sequence[int], *, shift: int = 0) -> None:
    """cv2.fillConvexPoly(canvas, points, colour, shift=shift) (8-connected; points with
    `shift` fraction bits, 0 or 16)."""
    n = len(points)
    up = _SHIFT - shift
    for i in range(n):
        if shift:
            _line_fixed(canvas, (points[i - 1][0] << up, points[i - 1][1] << up),
                        (points[i][0] << up, points[i][1] << up), colour)
        else:
            _line(canvas, points[i - 1], points[i], colour)
    delta = 1 << shift >> 1
    ys = [p[1] for p in points]
    xs = [p[0] for p in points]
    height, width = canvas.shape[:2]
    low_x, high_x = (min(xs) + delta) >> shift, (max(xs) + delta) >> shift
    y, y_max = (min(ys) + delta) >> shift, (max(ys) + delta) >> shift
    if n < 3 or high_x < 0 or y_max < 0 or low_x >= width or y >= height:
        return
    top = ys.index(min(ys))
    y_max = min(y_max, height - 1)
    edges = [{"idx": top, "di": 1, "x": -(1 << _SHIFT), "dx": 0, "ye": y},
             {"idx": top, "di": n - 1, "x": -(1 << _SHIFT), "dx": 0, "ye": y}]
    remaining = n
    half = 1 << (_SHIFT - 1)
    while True:
        for edge in edges:
            if y >= edge["ye"]:
                start = edge["idx"]
                index = (start + edge["di"]) % n
                while remaining > 0:
                    remaining -= 1
                    ty = (points[index][1] + delta) >> shift
                    if ty > y:
                        xs0, xe = points[start][0] << up, points[index][0] << up
                        numerator, denominator = (xe - xs0) * 2 + (ty - y), 2 * (ty - y)
                        edge.update(ye=ty, x=xs0, idx=index,
                                    dx=int(math.copysign(abs(numerator) // denominator,
                                                         numerator)))
                        break
                    start, index = index, (index + edge["di"]) % n
                else:
                    remaining -= 1
        if remaining < 0:
            break
        if y >= 0:
            left, right = sorted(edges, key=lambda e: e["x"])
            x1, x2 = (left["x"] + half) >> _SHIFT, (right["x"] + half) >> _SHIFT
            if x2 >= 0 and x1 < width:
                canvas[y, max(x1, 0):min(x2, width - 1) + 1] = colour
        for edge in edges:
            edge["x"] += edge["dx"]
        y += 1
        if y > y_max:
            break


def fill_circle(canvas: np.ndarray, centre: tuple[int, int], radius: int,
                colour: Sequence[int]) -> None:
    """cv2.circle(canvas, centre, radius, colour, thickness=-1) (8-connected)."""
    height, width = canvas.shape[:2]
    cx, cy = centre
    error, dx, dy, plus, minus = 0, radius, 0, 1, (radius << 1) - 1
    while dx >= dy:
        for row, half in ((cy - dy, dx), (cy + dy, dx), (cy - dx, dy), (cy + dx, dy)):
            if 0 <= row < height and cx - half < width and cx + half >= 0:
                canvas[row, max(cx - half, 0):min(cx + half, width - 1) + 1] = colour
        dy += 1
        error += plus
        plus += 2
        mask = 0 if error <= 0 else -1
        error -= minus & mask
        dx += mask
        minus -= mask & 2


def draw_body(canvas: np.ndarray, keypoints: Sequence[tuple[float, float] | None]) -> None:
    """One person's limbs and joints on `canvas` (HxWx3 uint8, in place), keypoints as
    fractions of its width and height. controlnet_aux: `util.draw_bodypose`."""
    height, width = canvas.shape[:2]
    for (a, b), colour in zip(_DRAWN_LIMBS, COLOURS):
        first, second = keypoints[a - 1], keypoints[b - 1]
        if first is None or second is None:
            continue
        xs = np.array([first[0], second[0]]) * float(width)
        ys = np.array([first[1], second[1]]) * float(height)
        length = ((ys[0] - ys[1]) ** 2 + (xs[0] - xs[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
        polygon = ellipse_polygon((int(np.mean(xs)), int(np.mean(ys))),
                                  (int(length / 2), _STICK), int(angle))
        fill_convex_polygon(canvas, polygon, [int(float(c) * 0.6) for c in colour])
    for point, colour in zip(keypoints, COLOURS):
        if point is not None:
            fill_circle(canvas, (int(point[0] * width), int(point[1] * height)), 4, colour)


def thick_line(canvas: np.ndarray, start: tuple[int, int], end: tuple[int, int],
               colour: Sequence[int], thickness: int) -> None:
    """cv2.line(canvas, start, end, colour, thickness) for thickness >= 2 (8-connected): a
    quadrilateral `thickness` wide in 16-bit fixed point, with round caps, of the line
    first cut (as OpenCV 5 cuts it) to the picture grown by `thickness` on each side."""
    grow = thickness
    clipped = _clip(canvas.shape[1] + 2 * grow, canvas.shape[0] + 2 * grow,
                    (start[0] + grow, start[1] + grow), (end[0] + grow, end[1] + grow))
    if clipped is None:
        return
    start, end = ((x - grow, y - grow) for x, y in clipped)
    (x0, y0), (x1, y1) = start, end
    dx, dy = float(x0 - x1), float(y1 - y0)
    length = dx * dx + dy * dy
    wide = thickness << (_SHIFT - 1)
    if length > np.finfo(np.float64).eps:
        scale = (wide + (thickness & 1) * (1 << _SHIFT) * 0.5) / math.sqrt(length)
        px, py = round(dy * scale), round(dx * scale)
        a, b = (x0 << _SHIFT, y0 << _SHIFT), (x1 << _SHIFT, y1 << _SHIFT)
        fill_convex_polygon(canvas, [(a[0] + px, a[1] + py), (a[0] - px, a[1] - py),
                                     (b[0] - px, b[1] - py), (b[0] + px, b[1] + py)],
                            colour, shift=_SHIFT)
    for point in (start, end):
        fill_circle(canvas, point, (wide + (1 << (_SHIFT - 1))) >> _SHIFT, colour)


def _hsv_colour(hue: float) -> tuple[int, int, int]:
    """matplotlib.colors.hsv_to_rgb([hue, 1, 1]) * 255, rounded as OpenCV rounds a colour."""
    sector = int(hue * 6.0)
    f = hue * 6.0 - sector
    q, t = 1.0 * (1.0 - f), 1.0 * (1.0 - (1.0 - f))
    rgb = ((1.0, t, 0.0), (q, 1.0, 0.0), (0.0, 1.0, t), (0.0, q, 1.0), (t, 0.0, 1.0),
           (1.0, 0.0, q))[sector % 6]
    return tuple(round(c * 255) for c in rgb)  # type: ignore[return-value]


_HAND_EDGES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
               (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18),
               (18, 19), (19, 20))
_HAND_COLOURS = tuple(_hsv_colour(i / float(len(_HAND_EDGES))) for i in range(len(_HAND_EDGES)))
_EPS = 0.01


def _pixel(point: tuple[float, float], height: int, width: int) -> tuple[int, int]:
    # float32 keypoints times the side in float32, as the detector's do
    return int(np.float32(point[0]) * np.float32(width)), int(
        np.float32(point[1]) * np.float32(height))


def draw_hand(canvas: np.ndarray, keypoints: Sequence[tuple[float, float] | None] | None
              ) -> None:
    """One hand's 21 joints on `canvas` (in place; fractions of its size, <= 0.01 meaning
    not found): its bones as 2-pixel lines in rainbow colours, then its joints as blue
    dots of radius 4. controlnet_aux: `util.draw_handpose`."""
    if not keypoints:
        return
    height, width = canvas.shape[:2]
    for (a, b), colour in zip(_HAND_EDGES, _HAND_COLOURS):
        first, second = keypoints[a], keypoints[b]
        if first is None or second is None:
            continue
        (x1, y1), (x2, y2) = _pixel(first, height, width), _pixel(second, height, width)
        if x1 > _EPS and y1 > _EPS and x2 > _EPS and y2 > _EPS:
            thick_line(canvas, (x1, y1), (x2, y2), colour, 2)
    for point in keypoints:
        if point is not None:
            x, y = _pixel(point, height, width)
            if x > _EPS and y > _EPS:
                fill_circle(canvas, (x, y), 4, (0, 0, 255))


def draw_face(canvas: np.ndarray, keypoints: Sequence[tuple[float, float] | None] | None
              ) -> None:
    """A face's landmarks on `canvas` (in place) as white dots of radius 3.
    controlnet_aux: `util.draw_facepose`."""
    height, width = canvas.shape[:2]
    for point in keypoints or ():
        if point is not None:
            x, y = _pixel(point, height, width)
            if x > _EPS and y > _EPS:
                fill_circle(canvas, (x, y), 3, (255, 255, 255))
