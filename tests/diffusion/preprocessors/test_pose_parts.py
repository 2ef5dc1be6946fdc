"""The openpose hands' and face's host parts against OpenCV and controlnet_aux: the hand crop's
uint8 Gaussian blur (cv2.GaussianBlur's bit-exact path), 2-pixel lines (cv2.line), and the
hands' and faces' drawing (util.draw_handpose, util.draw_facepose)."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is a test-only reference "
                                        "(extra: reference)")
pytest.importorskip("matplotlib", reason="draw_handpose's colours (extra: reference)")
pytest.importorskip("torch", reason="controlnet_aux's openpose needs torch (extra: reference)")
pytest.importorskip("scipy", reason="controlnet_aux's openpose needs scipy (extra: reference)")
from controlnet_aux_ref import controlnet_aux  # noqa: E402

from diffusion.preprocessors import pose_draw  # noqa: E402
from diffusion.preprocessors.blur_u8 import gaussian_blur_u8  # noqa: E402

util = controlnet_aux("open_pose.util", bare=("open_pose",))
body = controlnet_aux("open_pose.body")
pytestmark = pytest.mark.nodevice


def test_blur_equals_opencvs_bytes() -> None:
    """Random pictures (odd sizes, gray and colour, a crop of a larger one as the hand's box
    is) at the hand's sigma and others."""
    rng = np.random.default_rng(0)
    for sigma in (0.8, 0.5, 1.3, 2.7):
        for shape in ((37, 23, 3), (64, 61), (15, 100, 3)):
            picture = rng.integers(0, 256, shape, dtype=np.uint8)
            np.testing.assert_array_equal(gaussian_blur_u8(picture, sigma),
                                          cv2.GaussianBlur(picture, (0, 0), sigma))
    crop = rng.integers(0, 256, (200, 160, 3), dtype=np.uint8)[17:108, 40:131]
    want = cv2.GaussianBlur(crop, (0, 0), 0.8)
    assert (want != crop).mean() > 0.9
    np.testing.assert_array_equal(gaussian_blur_u8(crop, 0.8), want)
    with pytest.raises(ValueError, match="narrower than the blur's reach"):
        gaussian_blur_u8(crop[:3], 0.8)


def test_thick_lines_equal_opencvs() -> None:
    """Lines 2 and 3 pixels wide, ends inside, outside and equal."""
    rng = np.random.default_rng(1)
    for trial in range(400):
        height, width = (int(v) for v in rng.integers(10, 90, 2))
        start, end = (tuple(int(v) for v in rng.integers(-20, 110, 2)) for _ in range(2))
        if trial % 9 == 0:
            end = start
        thickness = 2 + trial % 2
        want = np.zeros((height, width, 3), np.uint8)
        cv2.line(want, start, end, (40, 90, 200), thickness=thickness)
        got = np.zeros((height, width, 3), np.uint8)
        pose_draw.thick_line(got, start, end, (40, 90, 200), thickness)
        np.testing.assert_array_equal(got, want)


def test_hands_and_faces_drawn_as_the_detectors() -> None:
    """Random hands (some joints at -1: not found) and faces, as float32 fractions."""
    rng = np.random.default_rng(2)
    for _ in range(20):
        height, width = (int(v) for v in rng.integers(40, 160, 2))
        hand = rng.uniform(-0.05, 1.0, (21, 2)).astype(np.float32)
        hand[rng.random(21) < 0.2] = -1 / np.float32(width)
        face = rng.uniform(-0.05, 1.0, (int(rng.integers(1, 70)), 2)).astype(np.float32)
        want = np.zeros((height, width, 3), np.uint8)
        util.draw_handpose(want, [body.Keypoint(x, y) for x, y in hand])
        util.draw_facepose(want, [body.Keypoint(x, y) for x, y in face])
        got = np.zeros((height, width, 3), np.uint8)
        pose_draw.draw_hand(got, [(x, y) for x, y in hand])
        pose_draw.draw_face(got, [(x, y) for x, y in face])
        assert want.any()
        np.testing.assert_array_equal(got, want)
