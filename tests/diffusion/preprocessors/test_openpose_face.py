"""The openpose face's parts against controlnet_aux's: its network (FaceNet) on random
weights in facenet.pth's layout, the face's box (util.faceDetect) and its landmarks
(Face.compute_peaks_from_heatmaps)."""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is a test-only reference (extra: reference)")
pytest.importorskip("scipy", reason="controlnet_aux's openpose needs scipy (extra: reference)")
from controlnet_aux_ref import controlnet_aux  # noqa: E402

import gpucore  # noqa: E402
from diffusion.models.annotators.openpose import FaceNetwork  # noqa: E402
from diffusion.preprocessors import pose_face  # noqa: E402
from gpustd import asarray  # noqa: E402

util = controlnet_aux("open_pose.util", bare=("open_pose",))
body = controlnet_aux("open_pose.body")


@pytest.fixture(scope="module")
def face() -> Any:
    """controlnet_aux's face.py, whose only use of torchvision (ToTensor, ToPILImage: module
    constants) is stood in for while it is imported, as torch 2.13's CPU wheel has none."""
    if "torchvision" in sys.modules:
        return controlnet_aux("open_pose.face")
    stand_in = types.ModuleType("torchvision.transforms")
    stand_in.ToTensor = stand_in.ToPILImage = object  # type: ignore[attr-defined]
    sys.modules.update({"torchvision": types.ModuleType("torchvision"),
                        "torchvision.transforms": stand_in})
    try:
        return controlnet_aux("open_pose.face")
    finally:
        del sys.modules["torchvision"], sys.modules["torchvision.transforms"]


def test_face_network_equals_facenet(first_device: gpucore.Device, face: Any) -> None:
    """The last stage's 71 heatmaps of a 24x40 picture, weights scaled (its biases are
    zeroed by FaceNet itself) so that they vary well above float32 error."""
    torch.manual_seed(8)
    network = face.FaceNet().eval()
    with torch.no_grad():
        for name, value in network.named_parameters():
            if name.endswith("weight"):
                value.mul_(8**0.5)
            else:
                value.add_(0.01)
    flat = {name: value.numpy() for name, value in network.state_dict().items()}
    x = np.random.default_rng(3).uniform(-0.5, 0.5, (1, 3, 24, 40)).astype(np.float32)
    with torch.no_grad():
        want = network(torch.from_numpy(x))[-1].numpy()
    ours = FaceNetwork.from_state_dict(flat, device=first_device)
    got = ours(asarray(x, device=ours.device)).numpy()
    assert got.shape == (1, 71, 3, 5) and want.std() > 1e-2
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_face_network_names_a_missing_tensor() -> None:
    with pytest.raises(ValueError, match=r"no tensor conv1_1\.weight: not an openpose face"):
        FaceNetwork.from_state_dict({})


@pytest.mark.nodevice
def test_face_box_equals_face_detect() -> None:
    """Boxes of random heads (nose, eyes or ears missing, boxes cut or too small)."""
    rng = np.random.default_rng(9)
    found = 0
    for _ in range(300):
        height, width = (int(v) for v in rng.integers(30, 200, 2))
        keypoints = [None if rng.random() < 0.25 else
                     (float(rng.integers(0, width)), float(rng.integers(0, height)))
                     for _ in range(18)]
        want = util.faceDetect(body.BodyResult(
            [None if p is None else body.Keypoint(*p) for p in keypoints], 0.0, 0),
            np.zeros((height, width, 3), np.uint8))
        assert pose_face.face_box(keypoints, height, width) == want
        found += want is not None
    assert 50 < found < 300


@pytest.mark.nodevice
def test_face_peaks_equal_the_face_estimators(face: Any) -> None:
    """Random maps, some never passing 0.05, some with ties at their highest value."""
    rng = np.random.default_rng(10)
    heatmaps = rng.uniform(-0.1, 0.06, (71, 13, 17))
    heatmaps[5] = 0.07
    heatmaps[7] = np.minimum(heatmaps[7], 0.0)
    want = face.Face.compute_peaks_from_heatmaps(None, heatmaps)
    assert 10 < len(want) < 71
    np.testing.assert_array_equal(pose_face.face_peaks(heatmaps), want)


@pytest.mark.nodevice
def test_pose_json_holds_hands_and_face() -> None:
    """Each person's hands and face as flat x, y, 1 triples (0, 0, 0 where missing), null
    where there are none, as the extension's encode_poses_as_dict."""
    from diffusion.preprocessors.openpose import pose_json

    people = [[(0.5, 0.25), None] + [None] * 16, [None] * 18]
    left = [(0.1, 0.2)] * 20 + [None]
    poses = pose_json(people, 64, 32, hands=[(left, None), (None, [(0.3, 0.4)] * 21)],
                      faces=[[(0.6, 0.7)] * 70, None])
    first, second = poses["people"]
    assert first["hand_left_keypoints_2d"] == [0.1, 0.2, 1.0] * 20 + [0.0, 0.0, 0.0]
    assert first["hand_right_keypoints_2d"] is None and second["face_keypoints_2d"] is None
    assert first["face_keypoints_2d"] == [0.6, 0.7, 1.0] * 70
    assert second["hand_right_keypoints_2d"] == [0.3, 0.4, 1.0] * 21
    assert pose_json(people, 64, 32)["people"][0]["hand_left_keypoints_2d"] is None


@pytest.mark.nodevice
def test_scale_maps_equals_torchs_bilinear() -> None:
    """Enlarging and shrinking, odd sizes and a single row, as Face.__call__'s interpolate."""
    rng = np.random.default_rng(11)
    for (h, w), (height, width) in (((3, 5), (37, 22)), ((48, 48), (29, 31)), ((1, 4), (1, 9))):
        maps = rng.standard_normal((4, h, w)).astype(np.float32)
        want = torch.nn.functional.interpolate(torch.from_numpy(maps)[None], (height, width),
                                               mode="bilinear", align_corners=True)[0]
        np.testing.assert_allclose(pose_face.scale_maps(maps, height, width), want.numpy(),
                                   rtol=1e-5, atol=1e-5)
