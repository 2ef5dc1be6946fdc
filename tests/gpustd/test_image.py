"""gpustd.image against Pillow (resize), scipy.ndimage (filters) and numpy references."""

from __future__ import annotations

import numpy as np
import PIL
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage
from support import assert_close

from gpustd import Tensor, image
from gpustd._image_resize import vertical_first

PILLOW = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
          "bicubic": Image.Resampling.BICUBIC}
MODES = ["reflect", "nearest", "mirror", "wrap", "constant"]
PILLOW_13 = int(PIL.__version__.split(".")[0]) >= 13
SETTINGS = settings(max_examples=12, deadline=None)

sizes = st.integers(1, 29)
channels = st.sampled_from([None, 1, 3, 4])  # None: a 2-D HxW image
layouts = st.sampled_from(["HWC", "CHW"])


# -- helpers ----------------------------------------------------------------------------
def make_image(seed: int, h: int, w: int, c: int | None, layout: str, u8: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (h, w) if c is None else ((h, w, c) if layout == "HWC" else (c, h, w))
    if u8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.uniform(-1.0, 1.0, shape).astype(np.float32)


def planes(img: np.ndarray, layout: str) -> np.ndarray:
    """The image as (C, H, W)."""
    if img.ndim == 2:
        return img[None]
    return np.moveaxis(img, 2, 0) if layout == "HWC" else img


def unplanes(stack: np.ndarray, like: np.ndarray, layout: str) -> np.ndarray:
    if like.ndim == 2:
        return stack[0]
    return np.moveaxis(stack, 0, 2) if layout == "HWC" else stack


def per_plane(fn, img: np.ndarray, layout: str) -> np.ndarray:
    """Apply a 2-D float64 reference to every channel plane."""
    stack = np.stack([fn(p.astype(np.float64)) for p in planes(img, layout)])
    return unplanes(stack, img, layout)


def check(actual, img: np.ndarray, expected: np.ndarray) -> None:
    """uint8: numpy uint8 rounding the float64 reference; float: a close float32 Tensor."""
    if img.dtype == np.uint8:
        assert isinstance(actual, np.ndarray) and actual.dtype == np.uint8
        assert actual.shape == expected.shape
        # Correctly rounded up to float32 error: within half a step of the clipped value.
        err = np.abs(actual - np.clip(expected, 0, 255))
        assert err.max() <= 0.5 + 1e-3, f"uint8 error {err.max()}"
    else:
        assert isinstance(actual, Tensor) and actual.dtype == np.float32
        assert_close(actual.numpy(), expected, tol=2e-5)


def pillow_filter(x: np.ndarray, in_size: int, out_size: int, method: str) -> np.ndarray:
    """Pillow's resampling along axis 0 as a dense float64 matrix (written independently of
    the library: every input pixel weighed by the filter at its centre distance)."""
    scale = in_size / out_size
    stretch = max(scale, 1.0)
    centre = (np.arange(out_size)[:, None] + 0.5) * scale
    d = np.abs((np.arange(in_size)[None, :] + 0.5 - centre) / stretch)
    if method == "bilinear":
        w = np.clip(1.0 - d, 0.0, None)
    else:
        a = -0.5
        w = np.where(d < 1, ((a + 2) * d - (a + 3)) * d * d + 1,
                     np.where(d < 2, (((d - 5) * d + 8) * d - 4) * a, 0.0))
    w /= w.sum(axis=1, keepdims=True)
    return w @ x


def numpy_resize(plane: np.ndarray, oh: int, ow: int, method: str) -> np.ndarray:
    h, w = plane.shape
    rows = pillow_filter(plane, h, oh, method)
    return pillow_filter(rows.T, w, ow, method).T


def pillow_resize(plane: np.ndarray, oh: int, ow: int, method: str) -> np.ndarray:
    im = Image.fromarray(plane if plane.dtype == np.uint8 else plane.astype(np.float32))
    return np.asarray(im.resize((ow, oh), PILLOW[method]))


# -- resize -----------------------------------------------------------------------------
@SETTINGS
@given(h=sizes, w=sizes, oh=sizes, ow=sizes, c=channels, layout=layouts,
       method=st.sampled_from(list(PILLOW)), seed=st.integers(0, 2**16))
@example(h=1, w=1, oh=3, ow=2, c=3, layout="HWC", method="bicubic", seed=0)
@example(h=23, w=29, oh=5, ow=7, c=None, layout="HWC", method="bilinear", seed=1)
@example(h=29, w=7, oh=2, ow=19, c=4, layout="CHW", method="bicubic", seed=2)  # vertical first
@example(h=17, w=13, oh=17, ow=13, c=1, layout="CHW", method="nearest", seed=3)  # same size
def test_resize_uint8_equals_pillow(device, h, w, oh, ow, c, layout, method, seed) -> None:
    if not PILLOW_13 and vertical_first(h, w, oh, ow):
        pytest.skip(f"Pillow {PIL.__version__} < 13 resamples horizontally first")
    img = make_image(seed, h, w, c, layout, u8=True)
    out = image.resize(img, (oh, ow), method=method, layout=layout, device=device)
    expected = unplanes(np.stack([pillow_resize(p, oh, ow, method)
                                  for p in planes(img, layout)]), img, layout)
    assert out.dtype == np.uint8 and out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)  # bit-exact: tolerance 0


@SETTINGS
@given(h=sizes, w=sizes, oh=sizes, ow=sizes, c=channels, layout=layouts,
       method=st.sampled_from(["bilinear", "bicubic"]), seed=st.integers(0, 2**16))
@example(h=2, w=31, oh=1, ow=3, c=2, layout="HWC", method="bicubic", seed=0)
@example(h=1, w=1, oh=1, ow=1, c=None, layout="HWC", method="bilinear", seed=0)
def test_resize_float_matches_numpy(device, h, w, oh, ow, c, layout, method, seed) -> None:
    img = make_image(seed, h, w, c, layout, u8=False)
    out = image.resize(img, (oh, ow), method=method, layout=layout, device=device)
    check(out, img, per_plane(lambda p: numpy_resize(p, oh, ow, method), img, layout))
    pillow = per_plane(lambda p: pillow_resize(p.astype(np.float32), oh, ow, method), img,
                       layout)
    assert_close(out.numpy(), pillow, tol=2e-5)  # and Pillow's mode "F"


@pytest.mark.parametrize(("h", "w", "oh", "ow"), [(7, 5, 19, 3), (2, 15, 7, 1), (40, 40, 13, 61)])
def test_resize_nearest_float_picks_pillows_pixels(device, h, w, oh, ow) -> None:
    img = make_image(4, h, w, 2, "HWC", u8=False)
    out = image.resize(Tensor.from_numpy(img, device=device), (oh, ow), method="nearest")
    np.testing.assert_array_equal(
        out.numpy(), per_plane(lambda p: pillow_resize(p, oh, ow, "nearest"), img, "HWC"))


def test_resize_downscale_is_antialiased(device) -> None:
    # A 1-pixel checkerboard averages to grey when shrunk 4x; sampling without a widened
    # filter (OpenCV / torch without antialias) would keep stripes.
    board = ((np.indices((32, 32)).sum(axis=0) % 2) * 255).astype(np.uint8)
    out = image.resize(board, (8, 8), method="bilinear", device=device)
    assert np.abs(out.astype(int) - 128).max() <= 1


# -- filters ----------------------------------------------------------------------------
@SETTINGS
@given(h=sizes, w=sizes, c=channels, layout=layouts, u8=st.booleans(),
       sigma=st.floats(0.3, 3.0), mode=st.sampled_from(MODES), seed=st.integers(0, 2**16))
@example(h=1, w=1, c=3, layout="HWC", u8=True, sigma=2.0, mode="reflect", seed=0)
@example(h=3, w=31, c=None, layout="CHW", u8=False, sigma=2.5, mode="mirror", seed=0)
def test_gaussian_blur(device, h, w, c, layout, u8, sigma, mode, seed) -> None:
    img = make_image(seed, h, w, c, layout, u8)
    out = image.gaussian_blur(img, sigma, mode=mode, cval=0.25, layout=layout, device=device)
    radius = int(np.ceil(3 * sigma))  # the documented default: 2 * ceil(3 sigma) + 1 taps
    check(out, img, per_plane(lambda p: ndimage.gaussian_filter(
        p, sigma, mode=mode, cval=0.25, radius=radius), img, layout))


def test_gaussian_blur_per_axis_sigma_and_kernel_size(device) -> None:
    img = make_image(5, 13, 17, 3, "HWC", u8=False)
    out = image.gaussian_blur(img, (1.5, 0.0), kernel_size=(5, 9), device=device)
    check(out, img, per_plane(lambda p: ndimage.gaussian_filter(
        p, (1.5, 0.0), radius=(2, 4)), img, "HWC"))


@SETTINGS
@given(h=sizes, w=sizes, c=channels, layout=layouts, u8=st.booleans(),
       mode=st.sampled_from(MODES), seed=st.integers(0, 2**16))
@example(h=1, w=2, c=None, layout="HWC", u8=False, mode="mirror", seed=0)
def test_sobel(device, h, w, c, layout, u8, mode, seed) -> None:
    img = make_image(seed, h, w, c, layout, u8)
    out = image.sobel(img, mode=mode, cval=0.5, layout=layout, device=device)
    if mode == "constant":
        # scipy's sobel is two 1-D passes, and pads the intermediate with cval too; ours
        # extends the image once (the 2-D definition), as a 3x3 correlation does.
        sx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64)
        ref = lambda p: np.hypot(*(ndimage.correlate(p, k, mode=mode, cval=0.5)  # noqa: E731
                                   for k in (sx, sx.T)))
    else:
        ref = lambda p: np.hypot(ndimage.sobel(p, 0, mode=mode),  # noqa: E731
                                 ndimage.sobel(p, 1, mode=mode))
    check(out, img, per_plane(ref, img, layout))


@SETTINGS
@given(h=sizes, w=sizes, c=channels, layout=layouts, u8=st.booleans(),
       kh=st.integers(1, 6), kw=st.integers(1, 6), mode=st.sampled_from(MODES),
       seed=st.integers(0, 2**16))
@example(h=2, w=3, c=2, layout="CHW", u8=False, kh=6, kw=5, mode="wrap", seed=0)  # k > image
@example(h=5, w=1, c=None, layout="HWC", u8=True, kh=4, kw=2, mode="reflect", seed=1)
def test_conv2d_is_scipy_correlate(device, h, w, c, layout, u8, kh, kw, mode, seed) -> None:
    img = make_image(seed, h, w, c, layout, u8)
    kernel = np.random.default_rng(seed + 1).uniform(-1, 1, (kh, kw))
    if u8:
        kernel = np.abs(kernel) / kh  # keep most uint8 responses inside 0..255
    out = image.conv2d(img, kernel, mode=mode, cval=-0.75, layout=layout, device=device)
    check(out, img, per_plane(lambda p: ndimage.correlate(p, kernel, mode=mode, cval=-0.75),
                              img, layout))


def test_conv2d_flipped_kernel_is_scipy_convolve(device) -> None:
    img = make_image(6, 11, 9, None, "HWC", u8=False)
    kernel = np.random.default_rng(7).uniform(-1, 1, (3, 5))
    out = image.conv2d(img, kernel[::-1, ::-1], device=device)
    check(out, img, ndimage.convolve(img.astype(np.float64), kernel, mode="reflect"))


def test_uint8_results_round_and_clip(device) -> None:
    img = np.array([[0, 100, 255, 7, 201]], np.uint8)
    out = image.conv2d(img, [[-1.0, 2.5]], mode="nearest", device=device)
    # -1 * left + 2.5 * self: 0, 250, 537.5 -> 255, -237.5 -> 0, 495.5 -> 255
    np.testing.assert_array_equal(out, [[0, 250, 255, 0, 255]])


def test_float_tensor_in_tensor_out_on_its_device(device) -> None:
    img = make_image(8, 6, 5, 3, "CHW", u8=False)
    t = Tensor.from_numpy(img, device=device)
    out = image.sobel(t, layout="CHW")
    assert isinstance(out, Tensor) and out.device is device and out.shape == (3, 6, 5)
    check(out, img, per_plane(lambda p: np.hypot(ndimage.sobel(p, 0), ndimage.sobel(p, 1)),
                              img, "CHW"))


# -- errors -----------------------------------------------------------------------------
def test_bad_arguments_raise_before_gpu_work(device) -> None:
    img = make_image(9, 4, 4, 3, "HWC", u8=True)
    cases = [
        (lambda: image.resize(img, (2, 2), layout="NHWC", device=device), ValueError, "layout"),
        (lambda: image.sobel(img, layout="hwc", device=device), ValueError, "'HWC'"),
        (lambda: image.resize(img, (2, 2), method="lanczos", device=device), ValueError,
         "'bicubic'"),
        (lambda: image.resize(img, (0, 2), device=device), ValueError, "positive"),
        (lambda: image.resize(img, (2, -1), device=device), ValueError, "positive"),
        (lambda: image.resize(img, 4, device=device), ValueError, "(height, width)"),
        (lambda: image.resize(img, (2.5, 2), device=device), ValueError, "ints"),
        (lambda: image.sobel(img[None], device=device), ValueError, "2-D"),
        (lambda: image.sobel(img[:0], device=device), ValueError, "no pixels"),
        (lambda: image.sobel(img.astype(np.int16), device=device), TypeError, "astype"),
        (lambda: image.sobel(img, mode="edge", device=device), ValueError, "'nearest'"),
        (lambda: image.sobel(img, cval=np.nan, device=device), ValueError, "cval"),
        (lambda: image.gaussian_blur(img, -1.0, device=device), ValueError, "sigma"),
        (lambda: image.gaussian_blur(img, 1.0, kernel_size=4, device=device), ValueError,
         "odd"),
        (lambda: image.gaussian_blur(img, (1, 2, 3), device=device), ValueError, "pair"),
        (lambda: image.conv2d(img, [1.0, 2.0], device=device), ValueError, "2-D"),
        (lambda: image.conv2d(img, [[np.inf]], device=device), ValueError, "finite"),
    ]
    before = device.buffers_created
    for call, error, words in cases:
        with pytest.raises(error, match=None) as info:
            call()
        assert words in str(info.value), f"{info.value!r} should mention {words!r}"
    assert device.buffers_created == before


def test_float16_tensor_is_refused(f16_device) -> None:
    t = Tensor.from_numpy(np.ones((3, 3), np.float16), device=f16_device)
    with pytest.raises(TypeError, match="astype"):
        image.gaussian_blur(t, 1.0)
