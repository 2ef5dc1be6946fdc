"""The ControlNet preprocessors against OpenCV / numpy on the CPU (cv2 is a test reference)."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is a test-only reference "
                                        "(extra: reference)")

import gpucore  # noqa: E402
from diffusion.preprocessors import module_list, preprocess  # noqa: E402
from gpustd.canny import canny  # noqa: E402


def _photo_like(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Shapes, gradients and noise: edges of every direction and strength."""
    image = np.zeros((height, width, 3), np.uint8)
    cv2.circle(image, (width // 3, height // 2), height // 4, (200, 90, 30), -1)
    cv2.rectangle(image, (width // 2, 5), (width - 7, height // 2), (40, 160, 220), -1)
    cv2.line(image, (0, height - 1), (width - 1, height // 3), (255, 255, 255), 2)
    ramp = np.linspace(0, 120, width, dtype=np.float32)[None, :, None]
    noisy = image + ramp + rng.normal(0, 6, image.shape)
    return cv2.GaussianBlur(np.clip(noisy, 0, 255).astype(np.uint8), (0, 0), 1.2)


@pytest.mark.parametrize(("shape", "low", "high", "l2"), [
    ((61, 83, 3), 100, 200, False),   # random colour: the strongest channel per pixel
    ((61, 83), 20, 60, False),        # gray
    ((61, 83, 3), 30, 10, True),      # L2, thresholds given the wrong way round
])
def test_canny_equals_opencv_on_random(first_device: gpucore.Device, shape: tuple,
                                       low: float, high: float, l2: bool) -> None:
    rng = np.random.default_rng(sum(shape))
    image = cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8), (0, 0), 1.5)
    got = canny(image, low, high, l2_gradient=l2, device=first_device)
    want = cv2.Canny(image, low, high, L2gradient=l2)
    # integer arithmetic as OpenCV's: the same edges, pixel for pixel (docs/benchmarks.md)
    np.testing.assert_array_equal(got, want, err_msg="edges differ from cv2.Canny")
    assert want.any()


def test_canny_module_equals_opencv_on_a_picture(first_device: gpucore.Device) -> None:
    """The extension's canny: cv2.Canny of the colour picture, as three channels; 240 x 300
    so hysteresis chains cross many 16-pixel tiles."""
    image = _photo_like(np.random.default_rng(1), 240, 300)
    got = preprocess("canny", image, threshold_a=50, threshold_b=120, device=first_device)
    want = cv2.Canny(image, 50, 120)
    assert got.shape == (240, 300, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[:, :, 0], want)
    assert (got == got[:, :, :1]).all()


def test_simple_modules(first_device: gpucore.Device) -> None:
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (37, 45, 3), dtype=np.uint8)
    run = {name: (lambda name=name, **kw: preprocess(name, image, device=first_device, **kw))
           for name in module_list()}
    np.testing.assert_array_equal(run["none"](), image)
    np.testing.assert_array_equal(run["invert"](), 255 - image)
    darkest = image.min(axis=2)
    np.testing.assert_array_equal(run["threshold"](threshold_a=100.5)[:, :, 1],
                                  (darkest > 100.5) * 255)
    np.testing.assert_array_equal(run["threshold"]()[:, :, 2], (darkest > 127) * 255)
    np.testing.assert_array_equal(run["scribble_thr"]()[:, :, 0], (darkest < 127) * 255)
    blurred = run["blur_gaussian"](threshold_a=2.5).astype(int)
    assert np.abs(blurred - cv2.GaussianBlur(image, (0, 0), 2.5)).max() <= 1
    for rate in (2.0, 1.7):
        small = run["tile_resample"](threshold_a=rate).astype(int)
        want = cv2.resize(image, (int(45 / rate), int(37 / rate)), interpolation=cv2.INTER_AREA)
        assert small.shape == want.shape and np.abs(small - want).max() <= 1
    np.testing.assert_array_equal(run["tile_resample"](), image)  # rate 1: as is
    gray = preprocess("invert", image[:, :, 0], device=first_device)
    np.testing.assert_array_equal(gray, np.repeat(255 - image[:, :, :1], 3, axis=2))


@pytest.mark.nodevice
def test_bad_input_is_named() -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="unknown preprocessor 'depth_leres'"):
        preprocess("depth_leres", image)
    with pytest.raises(ValueError, match="uint8"):
        preprocess("invert", image.astype(np.float32))
    with pytest.raises(ValueError, match="threshold_a must be a finite"):
        preprocess("canny", image, threshold_a=float("nan"))


@pytest.mark.nodevice
def test_the_extensions_own_module_names_are_accepted() -> None:
    """The extension's internal names (its preprocessor_aliases' keys) name our modules, in
    preprocess and in a unit; an unknown name lists both."""
    from diffusion.pipelines.control_spec import ControlSpec
    from diffusion.preprocessors.registry import MODULE_ALIASES, PREPROCESSORS, module_name

    assert set(MODULE_ALIASES.values()) <= set(PREPROCESSORS)
    assert module_name("hed") == "softedge_hed" and module_name("canny") == "canny"
    assert ControlSpec(model="m", module="pidinet_safe").module == "softedge_pidisafe"
    assert ControlSpec(model="m", module="lineart").module == "lineart_realistic"
    assert ControlSpec(model="m", module="invert (from white bg & black line)").module == "invert"
    assert ControlSpec(model="m", module="depth").module == "depth_midas"
    assert ControlSpec(model="m", module="normal_map").module == "normal_midas"
    with pytest.raises(ValueError, match=r"'depth_zoe'.*hed_safe"):
        ControlSpec(model="m", module="depth_zoe")
    with pytest.raises(ValueError, match=r"'depth_zoe'.*softedge_hed.*pidinet_safe"):
        preprocess("depth_zoe", np.zeros((4, 4, 3), np.uint8))
