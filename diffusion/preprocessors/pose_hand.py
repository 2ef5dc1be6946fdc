"""The openpose hands, as controlnet_aux finds them: each hand's square box from the body's
shoulder, elbow and wrist (`util.handDetect`); the box's picture blurred (cv2.GaussianBlur,
sigma 0.8), scaled to 184, 368, 552 and 736 pixels, padded to a multiple of 8 with 128,
through the hand network, its 22 heatmaps scaled back and averaged at 128x128
(`Hand.__call__`); the 21 joints of those heatmaps: each smoothed (Gaussian, sigma 3), cut to
its largest region above 0.05 (8-connected, as skimage's and scipy's labels, largest by the
unsmoothed heat in it), and its highest point scaled to the box.

    boxes = hand_boxes(keypoints, height, width)   # [(x, y, side, is_left), ...], pixels
    heatmaps = hand_heatmaps(box_bgr, network)     # float64 [128, 128, 22]
    joints = hand_peaks(heatmaps, side, side)      # int [21, 2]: (x, y), (0, 0) not found
    left, right = detect_hands(bgr, keypoints, network)   # fractions of the picture, or None
    hands = detect_people_hands(bgr, people, network, max_pixels=1 << 21)   # [(left, right)]
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from .blur_u8 import gaussian_blur_u8
from .pose_batch import Network, run_batched
from .pose_body import gaussian_filter
from .pose_resize import axis_weights, smart_resize

__all__ = ["HAND_MAP_SIZE", "Network", "averaged_maps", "detect_hands", "detect_people_hands",
           "hand_boxes", "hand_heatmaps", "hand_inputs", "hand_peaks", "network_input",
           "regions"]

Joints = list[tuple[float, float]]

HAND_MAP_SIZE = 128
_WRIST_ELBOW = 0.33
_THRESHOLD = 0.05
_SMALLEST = 20
# (shoulder, elbow, wrist) of the left hand, then of the right, and which is left
_ARMS = (((5, 6, 7), True), ((2, 3, 4), False))
_SCALES = (0.5, 1.0, 1.5, 2.0)
_BOX = 368
_STRIDE = 8
_PAD_VALUE = 128
_BLUR_SIGMA = 0.8


def network_input(picture: np.ndarray) -> tuple[np.ndarray, int, int]:
    """A uint8 BGR picture padded right and down to a multiple of 8 with 128, as the pose
    networks read it (float32 [1, 3, H, W], BGR / 256 - 0.5), and the rows and columns
    padded. controlnet_aux: `util.padRightDownCorner` and what follows it."""
    pad_down, pad_right = -picture.shape[0] % _STRIDE, -picture.shape[1] % _STRIDE
    padded = np.pad(picture, ((0, pad_down), (0, pad_right), (0, 0)),
                    constant_values=_PAD_VALUE)
    planes = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], np.float32) / 256 - 0.5
    return planes, pad_down, pad_right


def hand_inputs(box: np.ndarray) -> list[tuple[np.ndarray, int, int]]:
    """A uint8 BGR box's four network inputs (network_input's planes, rows and columns
    padded): blurred, scaled to 184, 368, 552 and 736 pixels, as `Hand.__call__` feeds them."""
    blurred = gaussian_blur_u8(box, _BLUR_SIGMA)
    return [network_input(smart_resize(blurred, (scale * _BOX, scale * _BOX)))
            for scale in _SCALES]


def averaged_maps(inputs: Sequence[tuple[np.ndarray, int, int]],
                  outputs: Sequence[np.ndarray]) -> np.ndarray:
    """The hand network's maps ([1, 22, h, w] per input of hand_inputs) averaged over the
    scales at 128x128 (float64 [128, 128, 22]). Each scale's maps are enlarged 8 times
    (Lanczos), cut to the unpadded picture and shrunk to 128 (area), as `Hand.__call__`
    does; the three steps are one product of their weights here (no 736x736 maps), equal to
    float32 error."""
    total = np.zeros((HAND_MAP_SIZE, HAND_MAP_SIZE, 22))
    for (planes, pad_down, pad_right), out in zip(inputs, outputs, strict=True):
        maps = np.asarray(out, np.float32)[0].transpose(1, 2, 0)
        rows, cols = (_map_weights(small, kept) for small, kept in (
            (maps.shape[0], planes.shape[2] - pad_down),
            (maps.shape[1], planes.shape[3] - pad_right)))
        heat = np.tensordot(np.tensordot(rows, maps.astype(np.float64), axes=(1, 0)), cols,
                            axes=(1, 1))  # (128, 22, 128)
        total += heat.transpose(0, 2, 1).astype(np.float32) / len(_SCALES)
    return total


def hand_heatmaps(box: np.ndarray, network: Network) -> np.ndarray:
    """The hand network's 22 heatmaps of a uint8 BGR box averaged over its four scales, at
    128x128 (float64 [128, 128, 22]): averaged_maps of the network on hand_inputs."""
    inputs = hand_inputs(box)
    return averaged_maps(inputs, [network(planes) for planes, _, _ in inputs])


@functools.lru_cache(maxsize=64)
def _map_weights(small: int, kept: int) -> np.ndarray:
    """(128, small) weights of one axis of a scale's maps: enlarged 8 times, cut to `kept`,
    shrunk to 128 (read-only: shared by every hand of that size)."""
    weights = (axis_weights(kept, HAND_MAP_SIZE, shrink=True)
               @ axis_weights(small, small * _STRIDE, shrink=False)[:kept])
    weights.flags.writeable = False
    return weights


def detect_hands(bgr: np.ndarray, keypoints: Sequence[tuple[float, float] | None],
                 network: Network) -> tuple[Joints | None, Joints | None]:
    """A person's (left, right) hands' 21 joints in a uint8 BGR picture, from its 18 body
    keypoints in pixels: each (x / width, y / height) as float32 values, (-1 / width,
    -1 / height) where not found; None for a hand without a box.
    controlnet_aux: `OpenposeDetector.detect_hands`."""
    return detect_people_hands(bgr, [keypoints], network, max_pixels=0)[0]


def detect_people_hands(bgr: np.ndarray,
                        people: Sequence[Sequence[tuple[float, float] | None]],
                        network: Network, *, max_pixels: int
                        ) -> list[tuple[Joints | None, Joints | None]]:
    """detect_hands of each person, the hands' crops of one size through the network
    together (pose_batch.run_batched, at most max_pixels pixels a call; 0: one a call)."""
    height, width = bgr.shape[:2]
    boxes = [(person, box) for person, keypoints in enumerate(people)
             for box in hand_boxes(keypoints, height, width)]
    inputs = [hand_inputs(bgr[y:y + side, x:x + side]) for _, (x, y, side, _) in boxes]
    outputs = run_batched(network, [planes for four in inputs for planes, _, _ in four],
                          max_pixels)
    hands: list[list[Joints | None]] = [[None, None] for _ in people]
    for k, (person, (x, y, side, is_left)) in enumerate(boxes):
        heatmaps = averaged_maps(inputs[k], outputs[4 * k:4 * k + 4])
        crop_height, crop_width = bgr[y:y + side, x:x + side].shape[:2]
        peaks = hand_peaks(heatmaps, crop_height, crop_width).astype(np.float32)
        xs = np.where(peaks[:, 0] < 1e-6, -1, peaks[:, 0] + x) / float(width)
        ys = np.where(peaks[:, 1] < 1e-6, -1, peaks[:, 1] + y) / float(height)
        hands[person][0 if is_left else 1] = [(float(a), float(b)) for a, b in zip(xs, ys)]
    return [(left, right) for left, right in hands]


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


def regions(mask: np.ndarray) -> np.ndarray:
    """Each pixel of `mask`'s 8-connected regions labelled with its region's first pixel in
    raster order (its flat index; -1 off the mask): scipy.ndimage.label's regions, in its
    order when sorted. Each pixel takes the smallest label around it, then the label its
    label holds (pointer jumping: a long region settles in a few rounds, not one per pixel
    of its length), until nothing changes; labels only ever name pixels of the same region
    and fall, so they settle at its first pixel."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return np.full(mask.shape, -1)
    # labelled within the mask's bounding box: raster order there is raster order here
    box = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    found = np.full(mask.shape, -1)
    inner = _box_regions(mask[box])
    found[box] = np.where(inner < 0, -1, (inner // inner.shape[1] + rows[0]) * mask.shape[1]
                          + inner % inner.shape[1] + cols[0])
    return found


def _box_regions(mask: np.ndarray) -> np.ndarray:
    height, width = mask.shape
    big = height * width
    labels = np.where(mask, np.arange(big).reshape(mask.shape), big)
    padded = np.full((height + 2, width + 2), big)
    table = np.append(labels.ravel(), big)  # label -> that pixel's label; big -> big
    while True:
        padded[1:-1, 1:-1] = labels
        spread = labels.copy()
        for dy in range(3):
            for dx in range(3):
                np.minimum(spread, padded[dy:dy + height, dx:dx + width], out=spread)
        spread = np.where(mask, spread, big)
        table[:-1] = spread.ravel()
        spread = table[spread]
        if np.array_equal(spread, labels):
            return np.where(mask, labels, -1)
        labels = spread


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
        labels = regions(above)
        firsts, numbered = np.unique(labels[above], return_inverse=True)
        sums = np.bincount(numbered, weights=heat[above], minlength=len(firsts))
        heat[labels != firsts[int(np.argmax(sums))]] = 0
        row = int(heat.max(axis=1).argmax())
        col = int(heat[row].argmax())
        peaks.append((int(float(col) * float(width) / float(HAND_MAP_SIZE)),
                      int(float(row) * float(height) / float(HAND_MAP_SIZE))))
    return np.array(peaks)
