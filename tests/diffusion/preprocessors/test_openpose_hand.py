"""The openpose hand's parts against controlnet_aux's: its network (handpose_model) on random
weights in the file's layout, the hands' boxes (util.handDetect) and the joints of averaged
heatmaps (Hand.__call__'s peaks, skimage's labelling there, scipy's here)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is a test-only reference (extra: reference)")
pytest.importorskip("scipy", reason="controlnet_aux's openpose needs scipy (extra: reference)")
from controlnet_aux_ref import controlnet_aux, random_handpose  # noqa: E402

import gpucore  # noqa: E402
from diffusion.models.annotators.openpose import HandPoseNetwork  # noqa: E402
from diffusion.preprocessors import pose_hand  # noqa: E402
from gpustd import asarray  # noqa: E402

util = controlnet_aux("open_pose.util", bare=("open_pose",))
body = controlnet_aux("open_pose.body")


def test_hand_network_equals_handpose_model(first_device: gpucore.Device) -> None:
    """22 heatmaps of a 24x40 picture (3x5 after three pools), weights scaled so that the
    last stage's maps vary well above float32 error."""
    network, flat = random_handpose(5)
    x = np.random.default_rng(2).uniform(-0.5, 0.5, (1, 3, 24, 40)).astype(np.float32)
    with torch.no_grad():
        want = network(torch.from_numpy(x)).numpy()
    ours = HandPoseNetwork.from_state_dict(flat, device=first_device)
    got = ours(asarray(x, device=ours.device)).numpy()
    assert got.shape == (1, 22, 3, 5) and want.std() > 1e-2
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_hand_network_names_a_missing_tensor() -> None:
    with pytest.raises(ValueError, match=r"no tensor conv1_1\.weight: not an openpose hand"):
        HandPoseNetwork.from_state_dict({})


@pytest.mark.nodevice
def test_hand_boxes_equal_hand_detect() -> None:
    """Boxes of random arms (some joints missing, some boxes cut or too small)."""
    rng = np.random.default_rng(4)
    found = 0
    for _ in range(200):
        height, width = (int(v) for v in rng.integers(30, 300, 2))
        keypoints = [None if rng.random() < 0.15 else
                     (float(rng.integers(0, width)), float(rng.integers(0, height)))
                     for _ in range(18)]
        want = util.handDetect(body.BodyResult(
            [None if p is None else body.Keypoint(*p) for p in keypoints], 0.0, 0),
            np.zeros((height, width, 3), np.uint8))
        assert pose_hand.hand_boxes(keypoints, height, width) == want
        found += len(want)
    assert found > 50


@pytest.mark.nodevice
def test_hand_peaks_equal_the_hand_estimators() -> None:
    """Hand.__call__'s peak finding (skimage's 8-connected labels, the largest region by its
    heat) on random 128x128 maps with several regions each, and maps with none."""
    from scipy.ndimage import gaussian_filter

    label = pytest.importorskip("skimage.measure", reason="Hand's labelling (extra: "
                                "reference)").label

    rng = np.random.default_rng(6)
    spots = rng.uniform(-0.2, 1.0, (22, 16, 16)) * (rng.random((22, 16, 16)) < 0.1)
    heatmaps = np.stack([np.kron(s, np.ones((8, 8))) for s in spots], axis=2)
    heatmaps[:, :, 3] *= 0.01
    want, regions = [], 0
    for part in range(21):
        map_ori = heatmaps[:, :, part].copy()
        binary = np.ascontiguousarray(gaussian_filter(map_ori, sigma=3) > 0.05, np.uint8)
        if np.sum(binary) == 0:
            want.append([0, 0])
            continue
        label_img, count = label(binary, return_num=True, connectivity=binary.ndim)
        regions += count > 1
        best = np.argmax([np.sum(map_ori[label_img == i]) for i in range(1, count + 1)]) + 1
        map_ori[label_img != best] = 0
        y, x = util.npmax(map_ori)
        want.append([int(float(x) * 77 / 128), int(float(y) * 77 / 128)])
    assert regions >= 10 and [0, 0] in want
    np.testing.assert_array_equal(pose_hand.hand_peaks(heatmaps, 77, 77), np.array(want))


@pytest.mark.nodevice
def test_regions_equal_scipys_labels() -> None:
    """Random masks with many touching and diagonal regions; labels in scipy's order."""
    from scipy import ndimage

    rng = np.random.default_rng(7)
    for density in (0.3, 0.55):
        mask = rng.random((41, 57)) < density
        want, count = ndimage.label(mask, structure=np.ones((3, 3), int))
        got = pose_hand.regions(mask)
        firsts, numbered = np.unique(got[mask], return_inverse=True)
        assert len(firsts) == count > 5
        np.testing.assert_array_equal(numbered + 1, want[mask])


@pytest.mark.nodevice
def test_regions_away_from_the_corner_and_long_regions() -> None:
    """Masks inside a box off the map's corner (labelled within it, named here) and a
    snake one pixel wide (pointer jumping settles it): each region's first pixel in raster
    order, as scipy's regions."""
    from scipy import ndimage

    rng = np.random.default_rng(8)
    snake = np.zeros((40, 45), bool)
    snake[3:38:4, 2:44] = True
    for i, row in enumerate(range(3, 35, 4)):
        snake[row:row + 5, 43 if i % 2 == 0 else 2] = True
    masks = [snake]
    for _ in range(20):
        mask = np.zeros((37, 51), bool)
        top, left = (int(v) for v in rng.integers(1, 20, 2))
        mask[top:top + 15, left:left + 25] = rng.random((15, 25)) < 0.5
        masks.append(mask)
    for mask in masks:
        labels, count = ndimage.label(mask, structure=np.ones((3, 3), int))
        flat = np.arange(mask.size).reshape(mask.shape)
        want = np.full(mask.shape, -1)
        for k in range(1, count + 1):
            want[labels == k] = flat[labels == k].min()
        np.testing.assert_array_equal(pose_hand.regions(mask), want)
    assert ndimage.label(snake, structure=np.ones((3, 3), int))[1] == 1
