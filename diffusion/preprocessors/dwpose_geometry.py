"""The picture geometry of DWPose's two stages, as the ControlNet extension does it with
OpenCV, in numpy: the detector's letterbox (cv2.resize INTER_LINEAR into a grey square),
its boxes' non-maximum suppression, and each person's crop (a box grown by 1.25 to the pose
network's aspect, cut out by cv2.warpAffine INTER_LINEAR with a black border).

The crop follows OpenCV 5's warpAffine (float32 coordinates and weights; OpenCV 4's 1/32-pixel
fixed point differs from it by a few levels); the letterbox's resize uses cv2.resize's 11-bit
taps with the last rounding of its vector path (within one level of it; the picture itself
where it fits the square already).
"""

from __future__ import annotations

import numpy as np

__all__ = ["affine_matrix", "box_center_scale", "letterbox", "nms", "resize_linear",
           "warp_affine"]

_COEF = 2048  # cv2.resize's INTER_RESIZE_COEF_SCALE
_FILL = 114  # the letterbox's grey


def _taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cv2.resize's linear taps along one axis: first source index, the next one (clamped)
    and their 11-bit weights."""
    scale = size_in / size_out
    position = ((np.arange(size_out) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(position).astype(np.int64)
    fraction = position - first.astype(np.float32)
    low, high = first < 0, first >= size_in - 1
    fraction[low | high] = 0
    first = np.clip(first, 0, size_in - 1)
    weights = np.stack([np.rint((np.float32(1) - fraction) * _COEF),
                        np.rint(fraction * _COEF)], axis=1).astype(np.int64)
    return first, np.minimum(first + 1, size_in - 1), weights


def resize_linear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR) of a uint8
    HxWxC picture (within one level; the picture itself where the size is its own)."""
    if image.shape[:2] == (height, width):
        return image.copy()
    columns, next_columns, alpha = _taps(image.shape[1], width)
    rows, next_rows, beta = _taps(image.shape[0], height)
    source = image.astype(np.int64)
    across = (source[:, columns] * alpha[:, 0, None] + source[:, next_columns]
              * alpha[:, 1, None])
    top, bottom = across[rows] >> 4, across[next_rows] >> 4
    shape = (-1,) + (1,) * (image.ndim - 1)
    total = ((top * beta[:, 0].reshape(shape)) >> 16) + ((bottom * beta[:, 1].reshape(shape))
                                                          >> 16)
    return np.clip((total + 2) >> 2, 0, 255).astype(np.uint8)


def letterbox(image: np.ndarray, height: int, width: int) -> tuple[np.ndarray, float]:
    """The detector's input: the picture scaled by r (to fit height x width) into the top
    left of a grey (114) canvas, and r."""
    ratio = min(height / image.shape[0], width / image.shape[1])
    new_height, new_width = int(image.shape[0] * ratio), int(image.shape[1] * ratio)
    canvas = np.full((height, width, image.shape[2]), _FILL, np.uint8)
    canvas[:new_height, :new_width] = resize_linear(image, new_width, new_height)
    return canvas, ratio


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Greedy non-maximum suppression (boxes x1, y1, x2, y2 with the +1 pixel areas of the
    YOLOX demo): the indices kept, best first."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        overlap = w * h / (areas[best] + areas[rest] - w * h)
        order = rest[overlap <= threshold]
    return keep


def box_center_scale(box: np.ndarray, aspect: float, padding: float = 1.25
                     ) -> tuple[np.ndarray, np.ndarray]:
    """A box's centre and its size grown by `padding`, then widened or heightened to
    width / height == aspect (mmpose's bbox_xyxy2cs and _fix_aspect_ratio)."""
    center = np.hstack([box[0] + box[2], box[1] + box[3]]) * 0.5
    scale = np.hstack([box[2] - box[0], box[3] - box[1]]) * padding
    w, h = scale[0], scale[1]
    scale = np.hstack([w, w / aspect]) if w > h * aspect else np.hstack([h * aspect, h])
    return center, scale


def affine_matrix(center: np.ndarray, scale: np.ndarray, width: int, height: int
                  ) -> np.ndarray:
    """The 2x3 map from the picture to the crop (mmpose's get_warp_matrix without rotation,
    solved from its three float32 point pairs as cv2.getAffineTransform solves them)."""
    source = np.zeros((3, 2), np.float32)
    target = np.zeros((3, 2), np.float32)
    source[0] = center
    source[1] = center + np.array([0.0, scale[0] * -0.5])
    source[2] = source[1] + np.r_[source[0, 1] - source[1, 1], source[1, 0] - source[0, 0]]
    target[0] = [width * 0.5, height * 0.5]
    target[1] = target[0] + np.array([0.0, width * -0.5])
    target[2] = target[1] + np.r_[target[0, 1] - target[1, 1], target[1, 0] - target[0, 0]]
    system = np.zeros((6, 6))
    for i, (x, y) in enumerate(source.astype(np.float64)):
        system[2 * i, :3] = system[2 * i + 1, 3:] = (x, y, 1.0)
    return np.linalg.solve(system, target.astype(np.float64).reshape(6)).reshape(2, 3)


def warp_affine(image: np.ndarray, matrix: np.ndarray, width: int, height: int) -> np.ndarray:
    """cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR) of a uint8
    HxWxC picture, black outside it, as OpenCV 5 computes it: each output pixel read at the
    inverse map's point (float32) from its four neighbours with float32 weights, rounded."""
    (a, b, c), (d, e, f) = matrix
    det = a * e - b * d
    det = 1.0 / det if det else 0.0
    a, b, d, e = e * det, -b * det, -d * det, a * det
    inverse = np.array([[a, b, -a * c - b * f], [d, e, -d * c - e * f]], np.float32)
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height,
                                                                       dtype=np.float32))
    source_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    source_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    x0, y0 = np.floor(source_x).astype(np.int64), np.floor(source_y).astype(np.int64)
    fx, fy = source_x - x0.astype(np.float32), source_y - y0.astype(np.float32)
    rows, columns = image.shape[:2]
    total = np.zeros((height, width, image.shape[2]), np.float32)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            y, x = y0 + dy, x0 + dx
            inside = (y >= 0) & (y < rows) & (x >= 0) & (x < columns)
            pixels = image[np.clip(y, 0, rows - 1), np.clip(x, 0, columns - 1)]
            total += np.where(inside, wy * wx, np.float32(0))[:, :, None] * pixels
    return np.clip(np.rint(total), 0, 255).astype(np.uint8)
