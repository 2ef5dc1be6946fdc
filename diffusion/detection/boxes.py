"""What surrounds a YOLO network's run, as ultralytics' `predict` does it: the letterbox (the
picture scaled so its long side is `image_size`, padded with grey 114 to multiples of 32),
non-maximum suppression, and the boxes taken back to the picture's pixels.

    found = detect(yolo, picture, confidence=0.3)   # picture HxWx3 uint8 RGB
    found.boxes, found.scores, found.classes        # [n, 4] x1 y1 x2 y2, [n], [n]
    found.masks                                     # a -seg model's [n, H, W] bool, else None

torch: `ultralytics.YOLO(path).predict(picture, conf=0.3)[0].boxes` (`xyxy`, `conf`, `cls`),
and `.masks.data` (at the letterboxed input's size H x W, as ultralytics leaves them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import gpustd

from .segment import Segment, process_mask
from .yolo import decode

__all__ = ["Detections", "detect", "letterbox", "nms"]

_MAX_WH = 7680  # ultralytics' class offset: boxes of different classes never overlap
_STRIDE = 32


@dataclass
class Detections:
    """Boxes [n, 4] (x1, y1, x2, y2 in the picture's pixels), scores [n], classes [n] (ints),
    best first; a segmentation model's masks [n, H, W] (bool, at the size of the letterboxed
    network input, its grey bands included, as ultralytics' `Results.masks.data`), else None."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    masks: np.ndarray | None = None


def _resize_bilinear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres and no antialiasing. cv2: `cv2.resize(image,
    (width, height), interpolation=cv2.INTER_LINEAR)` (to its 1/2048 fixed-point weights)."""
    def axis(out: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.clip((np.arange(out) + 0.5) * size / out - 0.5, 0, size - 1)
        low = np.floor(src).astype(int)
        return low, np.minimum(low + 1, size - 1), (src - low)[:, None]
    y0, y1, fy = axis(height, image.shape[0])
    x0, x1, fx = axis(width, image.shape[1])
    data = image.astype(np.float32)
    rows = data[y0] * (1 - fy[..., None]) + data[y1] * fy[..., None]
    out = rows[:, x0] * (1 - fx) + rows[:, x1] * fx
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)  # cv2 rounds half up


def letterbox(image: np.ndarray, image_size: int) -> np.ndarray:
    """The network's input [1, 3, H, W] float32 in [0, 1] (H, W multiples of 32).
    ultralytics: `LetterBox(auto=True)` then `/ 255`."""
    h, w = image.shape[:2]
    gain = min(image_size / h, image_size / w)
    new_w, new_h = round(w * gain), round(h * gain)
    pad_w, pad_h = (image_size - new_w) % _STRIDE / 2, (image_size - new_h) % _STRIDE / 2
    if (new_w, new_h) != (w, h):
        image = _resize_bilinear(image, new_w, new_h)
    top, bottom = round(pad_h - 0.1), round(pad_h + 0.1)
    left, right = round(pad_w - 0.1), round(pad_w + 0.1)
    padded = np.pad(image, ((top, bottom), (left, right), (0, 0)), constant_values=114)
    x = padded.transpose(2, 0, 1)[None].astype(np.float32) / 255
    return np.ascontiguousarray(x)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes kept (x1 y1 x2 y2), best first: each drops the later ones that
    overlap it by more than `iou`. torchvision: `torchvision.ops.nms(boxes, scores, iou)`."""
    order = np.argsort(-scores, kind="stable")
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        low = np.maximum(boxes[best, :2], boxes[rest, :2])
        high = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(high - low, 0, None), axis=1)
        order = rest[inter / (area[best] + area[rest] - inter) <= iou]
    return np.asarray(keep, dtype=int)


def detect(yolo: Any, image: np.ndarray, *, confidence: float = 0.3, iou: float = 0.7,
           image_size: int = 640, max_det: int = 300) -> Detections:
    """The boxes `yolo` (a YoloFile) finds in `image` (HxWx3 uint8 RGB) scoring above
    `confidence`, after NMS per class, in the picture's pixels."""
    network = yolo.network
    x = letterbox(image, image_size)
    features = network.features(gpustd.asarray(x, device=yolo.device))
    boxes, scores = decode(network.head(features), x.shape[-2:], network.reg_max, network.dfl)
    classes, best = scores.argmax(axis=1), scores.max(axis=1)
    chosen = np.flatnonzero(best > confidence)
    boxes, best, classes = boxes[chosen], best[chosen], classes[chosen]
    xyxy = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2],
                          axis=1)
    keep = nms(xyxy + classes[:, None] * _MAX_WH, best, iou)[:max_det]
    (h_in, w_in), (h, w) = x.shape[-2:], image.shape[:2]
    masks = None
    if isinstance(network.head, Segment):  # a -seg model: the masks of the boxes kept
        masks = np.zeros((0, h_in, w_in), bool)
        if keep.size:
            coefficients, proto = network.head.masks(features)
            masks = process_mask(proto, coefficients[:, chosen[keep]], xyxy[keep], (h_in, w_in))
    # back to the picture as ultralytics' scale_boxes does: its gain and padding from the
    # two sizes
    gain = min(h_in / h, w_in / w)
    left, top = round((w_in - w * gain) / 2 - 0.1), round((h_in - h * gain) / 2 - 0.1)
    xyxy = (xyxy[keep] - [left, top, left, top]) / gain
    xyxy = np.clip(xyxy, 0, [w, h, w, h]).astype(np.float32)
    return Detections(xyxy, best[keep], classes[keep].astype(int), masks)
