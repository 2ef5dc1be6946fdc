"""The openpose face's numpy parts, as controlnet_aux finds them: the face's square box from
the body's nose, eyes and ears (`util.faceDetect`), and its landmarks, the highest point of
each of the face network's heatmaps above 0.05 (`Face.compute_peaks_from_heatmaps`).

    box = face_box(keypoints, height, width)   # (x, y, side) in pixels, or None
    maps = scale_maps(heatmaps, side, side)    # the network's maps at the box's size
    landmarks = face_peaks(maps)               # int [K, 2]: (x, y) of each map found
    face = detect_face(bgr, keypoints, network)   # fractions of the picture, or None
    faces = detect_faces(bgr, people, network, max_pixels=1 << 21)   # one per person

The box's picture goes to the face network scaled to 384x384 (area shrinking, Lanczos
enlarging) as BGR / 256 - 0.5 (`Face.__call__`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .pose_batch import run_batched
from .pose_resize import smart_resize

__all__ = ["detect_face", "detect_faces", "face_box", "face_peaks", "scale_maps"]

_NETWORK_SIDE = 384

_SMALLEST = 20
_THRESHOLD = 0.05
# the eyes and ears (0-based body keypoints) and how many times their distance from the nose
# the box reaches
_REACH = ((14, 3.0), (15, 3.0), (16, 1.5), (17, 1.5))


def face_box(keypoints: Sequence[tuple[float, float] | None], height: int, width: int
             ) -> tuple[int, int, int] | None:
    """The face's box (x, y of its top left corner, its side) in a picture of height x width
    from a person's 18 body keypoints in pixels (None where not found): around the nose,
    reaching 3 times the farthest eye's distance (the larger of its x and y offsets) or 1.5
    times the farthest ear's; None without the nose, without eyes and ears, or under 20
    pixels. controlnet_aux: `util.faceDetect`."""
    nose = keypoints[0]
    if nose is None or all(keypoints[k] is None for k, _ in _REACH):
        return None
    reach = 0.0
    for k, times in _REACH:
        point = keypoints[k]
        if point is not None:
            reach = max(reach, max(abs(nose[0] - point[0]), abs(nose[1] - point[1])) * times)
    x, y = max(nose[0] - reach, 0), max(nose[1] - reach, 0)
    # as the original: the cut tests the box's half side, and then cuts its whole side
    side = min(reach * 2 if x + reach <= width else width - x,
               reach * 2 if y + reach <= height else height - y)
    return (int(x), int(y), int(side)) if side >= _SMALLEST else None


def face_peaks(heatmaps: np.ndarray) -> np.ndarray:
    """The landmarks (int [K, 2]: x, y) of the maps (float [C, H, W]) whose highest value
    passes 0.05, in their order (maps that do not are left out, as the original leaves
    them). controlnet_aux: `Face.compute_peaks_from_heatmaps`."""
    peaks = []
    for heat in heatmaps:
        if not (heat > _THRESHOLD).any():
            continue
        y, x = np.unravel_index(int(np.argmax(np.where(heat > _THRESHOLD, heat, -np.inf))),
                                heat.shape)
        peaks.append((int(x), int(y)))
    return np.array(peaks)


def _bilinear(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) weights of bilinear scaling with the corners aligned."""
    where = np.arange(size_out) * ((size_in - 1) / (size_out - 1) if size_out > 1 else 0.0)
    low = np.minimum(np.floor(where).astype(int), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    out = np.zeros((size_out, size_in))
    np.add.at(out, (np.arange(size_out), low), 1 - (where - low))
    np.add.at(out, (np.arange(size_out), high), where - low)
    return out


def scale_maps(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Maps (float [C, h, w]) scaled to height x width, bilinear with the corners aligned
    (float64). torch: `F.interpolate(maps[None], (height, width), mode="bilinear",
    align_corners=True)[0]`."""
    rows, cols = _bilinear(maps.shape[1], height), _bilinear(maps.shape[2], width)
    return np.einsum("yh,chw,xw->cyx", rows, maps.astype(np.float64), cols, optimize=True)


def detect_face(bgr: np.ndarray, keypoints: Sequence[tuple[float, float] | None],
                network: Callable[[np.ndarray], np.ndarray]
                ) -> list[tuple[float, float]] | None:
    """A person's face landmarks in a uint8 BGR picture from its 18 body keypoints in pixels:
    each (x / width, y / height) as float32 values; None without a box or landmarks.
    `network`: float32 [N, 3, 384, 384] -> [N, 71, 48, 48]. controlnet_aux:
    `OpenposeDetector.detect_face`."""
    return detect_faces(bgr, [keypoints], network, max_pixels=0)[0]


def detect_faces(bgr: np.ndarray, people: Sequence[Sequence[tuple[float, float] | None]],
                 network: Callable[[np.ndarray], np.ndarray], *, max_pixels: int
                 ) -> list[list[tuple[float, float]] | None]:
    """detect_face of each person, the faces through the network together
    (pose_batch.run_batched, at most max_pixels pixels a call; 0: one a call)."""
    height, width = bgr.shape[:2]
    boxes = [face_box(keypoints, height, width) for keypoints in people]
    found = [box for box in boxes if box is not None]
    inputs = [np.ascontiguousarray(smart_resize(bgr[y:y + side, x:x + side], (
        _NETWORK_SIDE, _NETWORK_SIDE)).transpose(2, 0, 1)[None], np.float32) / 256.0 - 0.5
        for x, y, side in found]
    outputs = iter(run_batched(network, inputs, max_pixels))
    return [None if box is None else _landmarks(bgr, box, next(outputs)) for box in boxes]


def _landmarks(bgr: np.ndarray, box: tuple[int, int, int], maps: np.ndarray
               ) -> list[tuple[float, float]] | None:
    height, width = bgr.shape[:2]
    x, y, side = box
    crop_height, crop_width = bgr[y:y + side, x:x + side].shape[:2]
    peaks = face_peaks(scale_maps(maps[0], crop_height, crop_width)).astype(np.float32)
    if peaks.ndim != 2 or peaks.shape[1] != 2:
        return None
    xs = np.where(peaks[:, 0] < 1e-6, -1, peaks[:, 0] + x) / float(width)
    ys = np.where(peaks[:, 1] < 1e-6, -1, peaks[:, 1] + y) / float(height)
    return [(float(a), float(b)) for a, b in zip(xs, ys)]
