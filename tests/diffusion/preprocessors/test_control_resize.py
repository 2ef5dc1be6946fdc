"""The extension's resize modes, pixel perfect and processor resolution against its own code
(scripts/controlnet.py `detectmap_proc`, scripts/utils.py `resize_image_with_pad`,
external_code.py `pixel_perfect_resolution`), restated here over OpenCV (a test reference
only). Our resampling is numpy's: equal to cv2.resize within one level."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="OpenCV is a test-only reference")

from diffusion.preprocessors.resize import (  # noqa: E402
    RESIZE_MODES,
    fit_map,
    pixel_perfect_resolution,
    resize,
    resize_mode,
    resize_with_pad,
)

# scripts/lvminthin.py, as the extension has it
_THIN_RAW = [np.array([[-1, -1, -1], [0, 1, 0], [1, 1, 1]], dtype=np.int32),
             np.array([[0, -1, -1], [1, 1, -1], [0, 1, 0]], dtype=np.int32)]
_PRUNE_RAW = [np.array([[-1, -1, -1], [-1, 1, -1], [0, 0, -1]], dtype=np.int32),
              np.array([[-1, -1, -1], [-1, 1, -1], [-1, 0, 0]], dtype=np.int32)]
THIN = [np.rot90(x, k=k, axes=(0, 1)) for k in range(4) for x in _THIN_RAW]
PRUNE = [np.rot90(x, k=k, axes=(0, 1)) for k in range(4) for x in _PRUNE_RAW]


def _their_thin_once(x: np.ndarray, kernels: list[np.ndarray]) -> tuple[np.ndarray, bool]:
    done = True
    for k in kernels:
        objects = np.where(cv2.morphologyEx(x, cv2.MORPH_HITMISS, k) > 127)
        x[objects] = 0
        done = done and objects[0].shape[0] == 0
    return x, done


def their_thin(x: np.ndarray, prunings: bool = True) -> np.ndarray:
    y = x
    for _ in range(32):
        y, done = _their_thin_once(y, THIN)
        if done:
            break
    if prunings:
        y, _ = _their_thin_once(y, PRUNE)
    return y


def their_nms(x: np.ndarray) -> np.ndarray:
    lines = [np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=np.uint8),
             np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], dtype=np.uint8),
             np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.uint8),
             np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=np.uint8)]
    y = np.zeros_like(x)
    for f in lines:
        np.putmask(y, cv2.dilate(x, kernel=f) == x, x)
    return y


def _their_resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The extension's high_quality_resize (an RGBA inpaint map: its mask resized alike and
    cut at 127)."""
    if x.shape[2] == 4:
        mask, x = x[:, :, 3], x[:, :, :3]
        if x.shape[0] != size[1] or x.shape[1] != size[0]:
            colours = len(np.unique(x.reshape(-1, 3), axis=0))
            smaller = size[0] * size[1] < x.shape[0] * x.shape[1]
            how = cv2.INTER_NEAREST if 2 < colours < 200 else (
                cv2.INTER_AREA if smaller else cv2.INTER_CUBIC)
            mask = cv2.resize(mask, size, interpolation=how)
        mask = ((mask > 127) * 255).astype(np.uint8)[:, :, None]
        return np.concatenate([_their_resize(x, size), mask], axis=2)
    if x.shape[0] == size[1] and x.shape[1] == size[0]:
        return x
    smaller = size[0] * size[1] < x.shape[0] * x.shape[1]
    bigger = size[0] * size[1] > x.shape[0] * x.shape[1]
    colours = len(np.unique(x.reshape(-1, x.shape[2]), axis=0))
    binary = colours == 2 and np.min(x) < 16 and np.max(x) > 240
    one_pixel_edge = False
    if binary:
        xc = cv2.erode(x, np.ones(shape=(3, 3), dtype=np.uint8), iterations=1)
        xc = cv2.dilate(xc, np.ones(shape=(3, 3), dtype=np.uint8), iterations=1)
        one_pixel_edge = np.where(xc < x)[0].shape[0] * 2 > np.where(x > 127)[0].shape[0]
    if 2 < colours < 200:
        interpolation = cv2.INTER_NEAREST
    elif smaller:
        interpolation = cv2.INTER_AREA
    else:
        interpolation = cv2.INTER_CUBIC
    y = cv2.resize(x, size, interpolation=interpolation)
    if binary:
        y = np.mean(y.astype(np.float32), axis=2).clip(0, 255).astype(np.uint8)
        if one_pixel_edge:
            y = their_nms(y)
            _, y = cv2.threshold(y, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
            y = their_thin(y, prunings=bigger)
        else:
            _, y = cv2.threshold(y, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        y = np.stack([y] * 3, axis=2)
    return y


def _theirs(detected: np.ndarray, mode: str, h: int, w: int) -> np.ndarray:
    if mode == "Just Resize":
        return _their_resize(detected, (w, h))
    old_h, old_w, _ = detected.shape
    k0, k1 = float(h) / old_h, float(w) / old_w
    if mode == "Resize and Fill":
        k = min(k0, k1)
        borders = np.concatenate([detected[0, :, :], detected[-1, :, :], detected[:, 0, :],
                                  detected[:, -1, :]], axis=0)
        colour = np.median(borders, axis=0).astype(detected.dtype)
        if len(colour) == 4:  # the extension's "inpaint hijack": added borders are masked
            colour[3] = 255
        background = np.tile(colour[None, None], [h, w, 1])
        detected = _their_resize(detected, (int(np.round(old_w * k)), int(np.round(old_h * k))))
        new_h, new_w, _ = detected.shape
        pad_h, pad_w = max(0, (h - new_h) // 2), max(0, (w - new_w) // 2)
        background[pad_h:pad_h + new_h, pad_w:pad_w + new_w] = detected
        return background
    k = max(k0, k1)
    detected = _their_resize(detected, (int(np.round(old_w * k)), int(np.round(old_h * k))))
    new_h, new_w, _ = detected.shape
    pad_h, pad_w = max(0, (new_h - h) // 2), max(0, (new_w - w) // 2)
    return detected[pad_h:pad_h + h, pad_w:pad_w + w]


def _pictures() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    photo = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    palette = rng.integers(0, 256, (5, 3), dtype=np.uint8)  # a segmentation map
    segments = palette[rng.integers(0, 5, (9, 11)).repeat(4, 0).repeat(5, 1)[:37, :53]]
    y, x = np.mgrid[0:37, 0:53]
    blob = np.repeat(((np.hypot(x - 25, y - 17) < 12) * 255).astype(np.uint8)[:, :, None], 3, 2)
    edges = np.repeat(cv2.Canny(cv2.GaussianBlur(blob // 2 + photo // 2, (0, 0), 1.5), 30, 90)
                      [:, :, None], 3, 2)  # one-pixel edges: thinned after resizing
    return {"photo": photo, "segments": segments, "binary": blob, "edges": edges}


@pytest.mark.nodevice
@pytest.mark.parametrize("mode", RESIZE_MODES)
@pytest.mark.parametrize("size", [(64, 48), (24, 40), (53, 37), (128, 96)])
def test_fit_map_is_the_extensions(mode: str, size: tuple[int, int]) -> None:
    width, height = size
    for name, picture in _pictures().items():
        ours = fit_map(picture, width, height, mode).astype(np.int16)
        theirs = _theirs(picture, mode, height, width).astype(np.int16)
        assert ours.shape == theirs.shape == (height, width, 3), name
        diff = np.abs(ours - theirs)
        if name in ("binary", "edges"):  # one level off could move Otsu's edge (0 here)
            assert (diff.max(axis=2) > 0).sum() <= 0.005 * width * height, name
        else:
            assert diff.max() <= 1, (name, diff.max())


@pytest.mark.nodevice
@pytest.mark.parametrize("mode", RESIZE_MODES)
@pytest.mark.parametrize("size", [(64, 48), (24, 40), (53, 37)])
def test_inpaint_maps_fit_as_the_extensions(mode: str, size: tuple[int, int]) -> None:
    """RGBA maps (the inpaint modules': the picture, the mask in alpha): the colours as any
    map's, the mask resized by the same interpolation and cut at 127, the borders Resize and
    Fill adds masked (outpainting)."""
    width, height = size
    pictures = _pictures()
    rng = np.random.default_rng(11)
    soft = np.clip(rng.normal(128, 90, (37, 53)), 0, 255).astype(np.uint8)  # a blurred mask
    for name in ("photo", "segments"):
        picture = pictures[name]
        rgba = np.concatenate([picture, soft[:picture.shape[0], :, None]], axis=2)
        ours = fit_map(rgba, width, height, mode).astype(np.int16)
        theirs = _theirs(rgba, mode, height, width).astype(np.int16)
        assert ours.shape == theirs.shape == (height, width, 4), name
        assert np.abs(ours[:, :, :3] - theirs[:, :, :3]).max() <= 1, name
        # area/cubic: one level off moves a pixel across 127 at most rarely; nearest (the
        # segments): at an exact multiple OpenCV's index (y * 1 / (dst / src)) may round up
        # where ours (y * src / dst) does not, taking the next source row for one row
        share = 0.01 if name == "photo" else 0.03
        assert (ours[:, :, 3] != theirs[:, :, 3]).sum() <= share * width * height, name
        assert set(np.unique(ours[:, :, 3])) <= {0, 255}
    same = np.concatenate([pictures["photo"], soft[:, :, None]], axis=2)
    assert set(np.unique(fit_map(same, 53, 37, "Just Resize")[:, :, 3])) == {0, 255}


@pytest.mark.nodevice
def test_resampling_is_opencvs() -> None:
    picture = _pictures()["photo"]
    for how, flag, sizes in (("area", cv2.INTER_AREA, [(20, 15), (26, 18), (7, 5), (24, 40),
                                                        (90, 71)]),
                             ("cubic", cv2.INTER_CUBIC, [(90, 71), (106, 74), (60, 40)]),
                             ("nearest", cv2.INTER_NEAREST, [(20, 15), (90, 71)])):
        for size in sizes:
            ours = resize(picture, size, how).astype(np.int16)
            want = cv2.resize(picture, size, interpolation=flag).astype(np.int16)
            assert np.abs(ours - want).max() <= 1, (how, size)


@pytest.mark.nodevice
def test_resize_with_pad_and_pixel_perfect() -> None:
    picture = _pictures()["photo"]
    for resolution in (64, 24, 100):
        padded, remove_pad = resize_with_pad(picture, resolution)
        k = resolution / 37
        h, w = int(np.round(37 * k)), int(np.round(53 * k))
        assert padded.shape == (-(-h // 64) * 64, -(-w // 64) * 64, 3)
        assert remove_pad(padded).shape == (h, w, 3)
        np.testing.assert_array_equal(padded[h:, :w], np.repeat(padded[h - 1:h, :w],
                                                                 padded.shape[0] - h, 0))
    # the extension's formula: the short side times the larger (smaller: Resize and Fill) scale
    assert pixel_perfect_resolution(picture, 512, 768, "Crop and Resize") == round(
        max(512 / 37, 768 / 53) * 37)
    assert pixel_perfect_resolution(picture, 512, 768, "Resize and Fill") == round(
        min(512 / 37, 768 / 53) * 37)


@pytest.mark.nodevice
def test_resize_mode_names() -> None:
    assert [resize_mode(i) for i in range(4)] == [*RESIZE_MODES, "Just Resize"]
    assert resize_mode("Inner Fit (Scale to Fit)") == "Crop and Resize"
    assert resize_mode("Envelope (Outer Fit)") == "Resize and Fill"
    assert resize_mode("just resize") == "Just Resize"
    for bad in ("Stretch", 4, True, None):
        with pytest.raises(ValueError, match="resize_mode"):
            resize_mode(bad)


def test_canny_at_processor_res_is_the_extensions(first_device: object) -> None:
    """canny with processor_res: the picture scaled (short side), padded to 64, cv2.Canny,
    the pad cut; the scaled pictures agree within a level, so edges differ in a few pixels."""
    from diffusion.preprocessors import preprocess

    shapes = _pictures()["binary"] // 4 * 3 + _pictures()["photo"] // 4  # a disc on noise
    picture = cv2.GaussianBlur(shapes, (0, 0), 1)
    for resolution in (64, 96):  # within the Resolution slider (64..2048)
        ours = preprocess("canny", picture, threshold_a=20, threshold_b=60,
                          resolution=resolution, device=first_device)
        padded, remove_pad = resize_with_pad(picture, resolution)
        scaled = cv2.resize(picture, (remove_pad(padded).shape[1], resolution),
                            interpolation=cv2.INTER_CUBIC)
        scaled = np.pad(scaled, [[0, padded.shape[0] - scaled.shape[0]],
                                 [0, padded.shape[1] - scaled.shape[1]], [0, 0]], mode="edge")
        theirs = remove_pad(cv2.Canny(scaled, 20, 60))
        assert ours.shape[:2] == theirs.shape
        edges = (theirs > 0).sum()
        assert edges > 150  # edges to compare
        assert (ours[:, :, 0] != theirs).sum() <= 0.02 * edges  # 0 here on lavapipe


@pytest.mark.nodevice
def test_thinning_is_the_extensions() -> None:
    """nake_nms and lvmin_thin on thick and thin edges, against the extension's OpenCV code."""
    from diffusion.preprocessors.thin import is_one_pixel_edge, lvmin_thin, nake_nms

    rng = np.random.default_rng(3)
    for _ in range(4):
        gray = cv2.GaussianBlur(rng.integers(0, 256, (41, 57), dtype=np.uint8), (0, 0), 2)
        edges = cv2.Canny(gray, 10, 30)
        thick = cv2.dilate(edges, np.ones((2, 2), np.uint8))
        np.testing.assert_array_equal(nake_nms(gray), their_nms(gray))
        for picture in (edges, thick):
            for prunings in (True, False):
                np.testing.assert_array_equal(lvmin_thin(picture, prunings=prunings),
                                              their_thin(picture.copy(), prunings))
        assert (thick != edges).any() and (their_thin(thick.copy()) != thick).any()
    assert is_one_pixel_edge(np.repeat(edges[:, :, None], 3, 2))
    assert not is_one_pixel_edge(_pictures()["binary"])
