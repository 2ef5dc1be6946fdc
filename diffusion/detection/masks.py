"""ADetailer's masks from detections (its `mask.py`): which boxes are kept (area ratio, the k
largest or most confident), each box a white rectangle (or a segmentation model's mask),
grown or shrunk (dilate / erode), moved (x / y offset), and merged or merged and inverted.

    keep = filter_boxes(found.boxes, found.scores, (w, h), min_ratio=0, max_ratio=1, k=0)
    masks = box_masks(found.boxes[keep], (w, h))       # or, from a -seg model:
    masks = segment_masks(found.masks[keep], (w, h))
    masks = prepare_masks(masks, dilate_erode=4, x_offset=0, y_offset=0, merge_invert="None")

Masks are uint8 HxW, 255 where the picture is repainted.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MERGE_INVERT", "box_masks", "dilate_erode", "filter_boxes", "prepare_masks",
           "segment_masks"]

MERGE_INVERT = ("None", "Merge", "Merge and Invert")


def filter_boxes(boxes: np.ndarray, scores: np.ndarray, size: tuple[int, int], *,
                 min_ratio: float = 0.0, max_ratio: float = 1.0, k: int = 0,
                 method: str = "Area") -> np.ndarray:
    """Indices of the boxes (x1 y1 x2 y2) whose area over the picture's (`size` = (w, h)) lies
    in [min_ratio, max_ratio], then the `k` largest (method "Area") or most confident
    ("Confidence"), best first; k 0 keeps them all in their order. ADetailer:
    `filter_by_ratio`, then `filter_k_by` (older: `filter_k_largest`)."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    ratio = area / float(size[0] * size[1])
    keep = np.flatnonzero((ratio >= min_ratio) & (ratio <= max_ratio))
    if k > 0:
        key = area[keep] if method == "Area" else scores[keep]
        keep = keep[np.argsort(-key, kind="stable")][:k]
    return keep


def box_masks(boxes: np.ndarray, size: tuple[int, int]) -> list[np.ndarray]:
    """One mask per box: the rectangle white, its edges included, as PIL's
    `ImageDraw.rectangle(box, fill=255)` draws it (ADetailer's `create_mask_from_bbox`)."""
    from PIL import Image, ImageDraw

    masks = []
    for box in boxes:
        mask = Image.new("L", size, 0)
        ImageDraw.Draw(mask).rectangle([float(v) for v in box], fill=255)
        masks.append(np.asarray(mask).copy())
    return masks


def segment_masks(masks: np.ndarray, size: tuple[int, int]) -> list[np.ndarray]:
    """A segmentation model's masks ([n, H, W] bool at the letterboxed input's size) as
    ADetailer's `mask_to_pil` makes them: 255 inside, the whole input (its grey bands too)
    resized to the picture's `size` (w, h) by PIL's default for "L" pictures, bicubic; so edges
    get grey levels, and a letterboxed picture's masks stretch as ADetailer's do."""
    from PIL import Image

    return [np.asarray(Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).resize(
        size, Image.Resampling.BICUBIC)).copy() for mask in masks]


def _max_filter(mask: np.ndarray, size: int) -> np.ndarray:
    """A size x size maximum, anchored as cv2 anchors an even kernel (at size // 2)."""
    before = size // 2
    out = mask.copy()
    for axis in (0, 1):
        length = mask.shape[axis]
        pad = [(0, 0), (0, 0)]
        pad[axis] = (before, size - 1 - before)
        padded = np.pad(out, pad)
        out = padded.take(range(0, length), axis=axis)
        for shift in range(1, size):
            np.maximum(out, padded.take(range(shift, shift + length), axis=axis), out=out)
    return out


def dilate_erode(mask: np.ndarray, value: int) -> np.ndarray:
    """Grown by a value x value square (value > 0), shrunk by one (value < 0). cv2:
    `cv2.dilate(mask, np.ones((v, v)))` / `cv2.erode(mask, np.ones((-v, -v)))`."""
    if value == 0:
        return mask
    if value > 0:
        return _max_filter(mask, value)
    return 255 - _max_filter(255 - mask, -value)


def prepare_masks(masks: list[np.ndarray], *, dilate_erode_by: int = 4, x_offset: int = 0,
                  y_offset: int = 0, merge_invert: str = "None") -> list[np.ndarray]:
    """ADetailer's `mask_preprocess`: each mask dilated or eroded, the black ones dropped, each
    moved right by x_offset and up by y_offset (wrapping round, as PIL's `ImageChops.offset`),
    then "Merge" (one mask, their union) or "Merge and Invert" (its inverse)."""
    masks = [dilate_erode(mask, dilate_erode_by) for mask in masks]
    masks = [mask for mask in masks if mask.any()]
    masks = [np.roll(mask, (-y_offset, x_offset), axis=(0, 1)) for mask in masks]
    if merge_invert != "None" and masks:
        merged = np.maximum.reduce(masks)
        masks = [merged if merge_invert == "Merge" else 255 - merged]
    return masks
