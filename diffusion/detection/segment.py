"""YOLOv8-seg's masks: the Segment head's mask branch on gpustd (per level a convolution chain
giving each anchor 32 mask coefficients, and the Proto network: conv, a 2x2 stride-2 transposed
conv, two convs, giving 32 prototype masks at a quarter of the input's size), and the masks of
the kept detections as ultralytics' `process_mask` makes them.

    coefficients, proto = head.masks(features)           # [32, A], [32, h/4, w/4]
    masks = process_mask(proto, coefficients[:, kept], boxes_in_input, (h, w))   # [n, h, w] bool

torch: `ultralytics.nn.modules.head.Segment` and `ultralytics.utils.ops.process_mask(...,
upsample=True)`, as the segmentation predictor calls it (`Results.masks.data`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpustd import Tensor
from gpustd.nn import conv_transpose2d

from .yolo import Block, Conv, Detect

__all__ = ["Proto", "Segment", "process_mask"]


@dataclass
class Proto:
    """cv1, the transposed conv (weight [in, out, 2, 2], bias [out], stride 2), cv2, cv3.
    torch: ultralytics' `Proto`."""

    first: Conv
    up_weight: Tensor
    up_bias: Tensor
    second: Conv
    out: Conv

    def __call__(self, x: Tensor) -> Tensor:
        y = conv_transpose2d(self.first(x), self.up_weight, self.up_bias, stride=2)
        return self.out(self.second(y))


@dataclass
class Segment:
    """Detect's maps (the boxes and classes, as `Detect` gives them) and, on demand, the mask
    branch: `masks(levels)` gives the coefficients [nm, A] (anchors in `decode`'s order) and
    the prototypes [nm, h, w] of the finest level. torch: ultralytics' `Segment`."""

    detect: Detect
    coefficients: list[Block]
    proto: Proto

    def __call__(self, levels: list[Tensor]) -> list[np.ndarray]:
        return self.detect(levels)

    def masks(self, levels: list[Tensor]) -> tuple[np.ndarray, np.ndarray]:
        coefficients = [branch(x).numpy() for x, branch in zip(levels, self.coefficients)]
        flat = np.concatenate([c.reshape(c.shape[1], -1) for c in coefficients], axis=1)
        return flat, self.proto(levels[0]).numpy()[0]


def _bilinear_weights(out: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch's `align_corners=False` sampling of `size` at `out` points: half-pixel centres,
    sources below 0 clamped to 0."""
    src = np.maximum((np.arange(out, dtype=np.float32) + 0.5) * np.float32(size / out) - 0.5, 0)
    low = np.floor(src).astype(int)
    high = np.minimum(low + 1, size - 1)
    return low, high, (src - low).astype(np.float32)


def upsample_bilinear(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """[n, h, w] float32 resized to [n, height, width]. torch: `F.interpolate(maps[None],
    (height, width), mode="bilinear", align_corners=False)[0]`."""
    y0, y1, fy = _bilinear_weights(height, maps.shape[1])
    x0, x1, fx = _bilinear_weights(width, maps.shape[2])
    rows = maps[:, y0] * (1 - fy[:, None]) + maps[:, y1] * fy[:, None]
    return rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx


def process_mask(proto: np.ndarray, coefficients: np.ndarray, boxes: np.ndarray,
                 shape: tuple[int, int]) -> np.ndarray:
    """The masks [n, H, W] (bool, `shape` = (H, W) the network input's size) of `n` detections:
    their coefficients [nm, n] times the prototypes [nm, h, w], zeroed outside each box (x1 y1
    x2 y2 in input pixels, scaled to the prototypes' grid), upsampled bilinearly to the input,
    above 0. torch: `ops.process_mask(proto, coefficients.T, boxes, shape, upsample=True)`."""
    nm, mh, mw = proto.shape
    height, width = shape
    logits = (coefficients.T.astype(np.float32) @ proto.reshape(nm, -1)).reshape(-1, mh, mw)
    scaled = boxes.astype(np.float32) * np.array([mw / width, mh / height] * 2, np.float32)
    cols = np.arange(mw, dtype=np.float32)[None, None, :]
    rows = np.arange(mh, dtype=np.float32)[None, :, None]
    x1, y1, x2, y2 = (scaled[:, i, None, None] for i in range(4))
    inside = (cols >= x1) & (cols < x2) & (rows >= y1) & (rows < y2)
    return upsample_bilinear(logits * inside, height, width) > 0
