"""The WebUI's "Mask blur" (diffusion.pipelines.mask_blur) against OpenCV, the WebUI's own blur
(opencv-python-headless: a test-only reference): the same bytes on random masks, sizes and
blurs, including 1-pixel sides and kernels longer than the picture. Host logic, no device."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from diffusion.pipelines.mask_blur import blur_mask, gaussian_taps, kernel_size

pytestmark = pytest.mark.nodevice


def _webui(mask: np.ndarray, blur_x: int, blur_y: int) -> np.ndarray:
    """processing.py's two passes, with OpenCV."""
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (the test reference)")
    if blur_x > 0:
        mask = cv2.GaussianBlur(mask, (kernel_size(blur_x), 1), blur_x)
    if blur_y > 0:
        mask = cv2.GaussianBlur(mask, (1, kernel_size(blur_y)), blur_y)
    return mask


def test_the_kernel_by_hand() -> None:
    """2 * int(2.5 * blur + 0.5) + 1 taps (blur 4: 21, blur 1: 7), symmetric 256ths adding up
    to 256; a wide blur's taps are a few 256ths each, rounded as coarsely as OpenCV's."""
    assert [kernel_size(blur) for blur in (1, 2, 4, 64)] == [7, 11, 21, 321]
    for blur in (1, 4, 30):
        taps = gaussian_taps(float(blur), kernel_size(blur))
        assert taps.sum() == 256 and np.array_equal(taps, taps[::-1])
    assert gaussian_taps(30.0, kernel_size(30)).max() == 4
    # sigma 1 over 5 taps: exp(-2), exp(-1/2), 1 over their sum 2.4837, in 256ths: 13.95 ->
    # 14 (-0.05 carried), 62.52 - 0.05 -> 62, the centre what is left: 256 - 2 x 76
    assert gaussian_taps(1.0, 5).tolist() == [14, 62, 104, 62, 14]


def test_the_same_bytes_as_opencv() -> None:
    rng = np.random.default_rng(5)
    for trial in range(120):
        height, width = (int(v) for v in rng.integers(1, 60, 2))
        if trial % 2:
            mask = rng.integers(0, 256, (height, width), dtype=np.uint8)
        else:  # a drawn mask: black and white
            mask = ((rng.random((height, width)) > 0.7) * 255).astype(np.uint8)
        blur_x, blur_y = (int(v) for v in rng.integers(0, 40, 2))
        ours = np.asarray(blur_mask(Image.fromarray(mask), blur_x, blur_y))
        assert np.array_equal(ours, _webui(mask, blur_x, blur_y)), (height, width, blur_x,
                                                                    blur_y)


def test_a_drawn_square_at_the_webuis_default() -> None:
    """The API's default blur (4, 4) of a square on a 96x80 mask is OpenCV's exactly; Pillow's
    GaussianBlur, which the server used, is up to several levels off."""
    mask = Image.new("L", (96, 80))
    mask.paste(255, (30, 20, 70, 50))
    want = _webui(np.asarray(mask), 4, 4)
    assert np.array_equal(np.asarray(blur_mask(mask, 4, 4)), want)
    pillow = np.asarray(mask.filter(ImageFilter.GaussianBlur(4)), np.int16)
    assert np.abs(pillow - want).max() > 1
    assert blur_mask(mask, 0, 0) is mask  # no blur: the mask as given
