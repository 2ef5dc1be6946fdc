"""ADetailer's mask operations against OpenCV and PIL (what its mask.py calls): dilation and
erosion by odd and even squares, the offset (PIL's ImageChops.offset), merge and invert, and
which boxes the ratio and top-k filters keep."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion.detection.masks import (
    box_masks,
    dilate_erode,
    filter_boxes,
    prepare_masks,
    segment_masks,
)

cv2 = pytest.importorskip("cv2", reason="test-only reference (extra: reference)")
pytestmark = pytest.mark.nodevice


@pytest.mark.parametrize("value", [1, 2, 4, 7, -3, -4])
def test_dilate_erode_equals_opencv(value: int) -> None:
    rng = np.random.default_rng(abs(value))
    mask = np.where(rng.random((37, 53)) > 0.9, 255, 0).astype(np.uint8)
    kernel = np.ones((abs(value), abs(value)), np.uint8)
    expected = (cv2.dilate if value > 0 else cv2.erode)(mask, kernel, iterations=1)
    np.testing.assert_array_equal(dilate_erode(mask, value), expected)


def test_boxes_offset_merge_invert() -> None:
    from PIL import Image, ImageChops

    boxes = np.array([[2.4, 3.0, 10.6, 12.0], [20.0, 5.0, 30.0, 9.0]], np.float32)
    masks = box_masks(boxes, (40, 24))
    assert masks[0].shape == (24, 40) and masks[0][3:13, 2:11].all()
    moved = prepare_masks(masks, dilate_erode_by=0, x_offset=5, y_offset=2)
    expected = np.asarray(ImageChops.offset(Image.fromarray(masks[1]), 5, -2))
    np.testing.assert_array_equal(moved[1], expected)
    (merged,) = prepare_masks(masks, dilate_erode_by=3, merge_invert="Merge")
    np.testing.assert_array_equal(merged, np.maximum(dilate_erode(masks[0], 3),
                                                     dilate_erode(masks[1], 3)))
    (inverted,) = prepare_masks(masks, dilate_erode_by=3, merge_invert="Merge and Invert")
    np.testing.assert_array_equal(inverted, 255 - merged)
    assert prepare_masks(masks, dilate_erode_by=-40) == []  # eroded away: dropped


def test_filters_keep_by_ratio_then_k() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 50, 50], [0, 0, 20, 20], [0, 0, 5, 5]], float)
    scores = np.array([0.9, 0.5, 0.6, 0.95])
    size = (100, 100)
    assert filter_boxes(boxes, scores, size).tolist() == [0, 1, 2, 3]
    assert filter_boxes(boxes, scores, size, min_ratio=0.005, max_ratio=0.1).tolist() == [0, 2]
    assert filter_boxes(boxes, scores, size, k=2).tolist() == [1, 2]
    assert filter_boxes(boxes, scores, size, k=2, method="Confidence").tolist() == [3, 0]


def test_segment_masks_as_adetailers_mask_to_pil() -> None:
    """ADetailer: `to_pil_image(masks[i], mode="L").resize((w, h))` of ultralytics' 0/1 float
    masks at the input's size (PIL's default resampling)."""
    from PIL import Image

    torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")
    rng = np.random.default_rng(7)
    masks = rng.random((2, 64, 96)) > 0.6
    ours = segment_masks(masks, (75, 50))
    for mask, got in zip(masks, ours):
        data = torch.from_numpy(mask).float().mul(255).byte().numpy()
        expected = np.asarray(Image.fromarray(data, mode="L").resize((75, 50)))
        np.testing.assert_array_equal(got, expected)
        assert got.shape == (50, 75) and 0 < (got % 255 != 0).mean() < 0.9  # grey edges
