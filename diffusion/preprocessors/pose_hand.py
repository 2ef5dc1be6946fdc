"""The openpose hands' numpy parts, as controlnet_aux finds them: each hand's square box from
the body's shoulder, elbow and wrist (`util.handDetect`), and the 21 joints of the hand
network's heatmaps averaged at 128x128 (`Hand.__call__` after the network): each heatmap
smoothed (Gaussian, sigma 3), cut to its largest region above 0.05 (8-connected, largest by
the unsmoothed heat in it), and its highest point scaled to the box.

    boxes = hand_boxes(keypoints, height, width)   # [(x, y, side, is_left), ...], pixels
    joints = hand_peaks(heatmaps, side, side)      # int [21, 2]: (x, y), (0, 0) not found
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .pose_body import gaussian_filter

__all__ = ["HAND_MAP_SIZE", "hand_boxes", "hand_peaks"]

HAND_MAP_SIZE = 128
_WRIST_ELBOW = 0.33
_THRESHOLD = 0.05
_SMALLEST = 20
# (shoulder, elbow, wrist) of the left hand, then of the right, and which is left
_ARMS = (((5, 6, 7), True), ((2, 3, 4), False))


def hand_boxes(keypoints: Sequence[tuple[float, float] | None], height: int, width: int
               ) -> list[tuple[int, int, int, bool]]:
    """Each hand's box (x, y of its top left corner, its side, whether it is the left hand) in
    a picture of height x width from a person's 18 body keypoints in pixels (None where not
    found): beyond the wrist by a third of the forearm, 1.5 times the longer of the forearm
    and 0.9 upper arms, cut at the picture's right and bottom; boxes under 20 pixels dropped.
    controlnet_aux: `util.handDetect`."""
    boxes = []
    for joints, is_left in _ARMS:
        points = [keypoints[j] for j in joints]
        if any(point is None for point in points):
            continue
        (x1, y1), (x2, y2), (x3, y3) = points  # type: ignore[misc]
        x = x3 + _WRIST_ELBOW * (x3 - x2)
        y = y3 + _WRIST_ELBOW * (y3 - y2)
        forearm = math.sqrt((x3 - x2) ** 2 + (y3 - y2) ** 2)
        upper_arm = math.sqrt((x2 - x1) ** 2 + (y2 - y1) ** 2)
        side = 1.5 * max(forearm, 0.9 * upper_arm)
        x, y = max(x - side / 2, 0), max(y - side / 2, 0)
        side = min(side if x + side <= width else width - x,
                   side if y + side <= height else height - y)
        if side >= _SMALLEST:
            boxes.append((int(x), int(y), int(side), is_left))
    return boxes


def hand_peaks(heatmaps: np.ndarray, height: int, width: int) -> np.ndarray:
    """The 21 joints (int [21, 2]: x, y in a box of height x width; (0, 0) where the heatmap
    never passes 0.05 once smoothed) of the hand network's heatmaps averaged over its scales
    (float64 [128, 128, >= 21])."""
    peaks = []
    for part in range(21):
        heat = heatmaps[:, :, part].copy()
        above = gaussian_filter(heat, sigma=3) > _THRESHOLD
        if not above.any():
            peaks.append((0, 0))
            continue
        labels, count = ndimage.label(above, structure=np.ones((3, 3), int))
        sums = ndimage.sum_labels(heat, labels, index=np.arange(1, count + 1))
        heat[labels != int(np.argmax(sums)) + 1] = 0
        row = int(heat.max(axis=1).argmax())
        col = int(heat[row].argmax())
        peaks.append((int(float(col) * float(width) / float(HAND_MAP_SIZE)),
                      int(float(row) * float(height) / float(HAND_MAP_SIZE))))
    return np.array(peaks)
