"""openpose_hand, openpose_face, openpose_faceonly and openpose_full against controlnet_aux's
OpenposeDetector (detect_poses with hands and faces, draw_poses), on the same people and the
same stand-in hand and face networks: the crops, blur, scales, padding, heatmap averaging,
peaks, offsets and drawing are what is compared here; the networks themselves are
test_openpose_hand's and test_openpose_face's, the body's people test_openpose's."""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is a test-only reference "
                                        "(extra: reference)")
torch = pytest.importorskip("torch", reason="torch is a test-only reference (extra: reference)")
pytest.importorskip("scipy", reason="controlnet_aux's openpose needs scipy (extra: reference)")
pytest.importorskip("skimage", reason="controlnet_aux's hand labels with scikit-image")
pytest.importorskip("matplotlib", reason="draw_handpose's colours (extra: reference)")
from controlnet_aux_ref import controlnet_aux  # noqa: E402

from diffusion.preprocessors import openpose, preprocess  # noqa: E402

# (x, y) in pixels of a 200x160 picture: a person with both arms and a face, one with a
# right arm reaching past the picture's edge and no eyes (no face), one too small for boxes
_PEOPLE = [
    [(80, 40), (80, 70), (60, 70), (50, 100), (45, 131), (100, 70), (111, 100), (117, 128),
     (61, 120), (60, 150), (60, 185), (99, 120), (98, 150), (97, 185), (74, 34), (86, 35),
     (68, 38), (92, 39)],
    [(140, 20), (140, 45), (125, 45), (135, 70), (155, 98), None, None, None, None, None,
     None, None, None, None, None, None, (133, 22), None],
    [(20, 180), (20, 185), (18, 185), (17, 188), (16, 190)] + [None] * 13,
]


class _StandIn(torch.nn.Module):
    """A cheap pose network: 8x8 average pools of the picture, a random 1x1 conv and a
    ReLU'd product, so that each map has a few strong regions."""

    def __init__(self, maps: int, seed: int, listed: bool = False) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.mix = torch.nn.Parameter(torch.randn(maps, 3, generator=gen) * 6)
        self.listed = listed

    def forward(self, x: Any) -> Any:
        pooled = torch.nn.functional.avg_pool2d(x, 8)
        out = torch.relu(torch.einsum("mc,nchw->nmhw", self.mix, pooled)) ** 2 - 0.02
        return [out] if self.listed else out


@pytest.fixture(scope="module")
def open_pose() -> Any:
    """controlnet_aux.open_pose (OpenposeDetector, draw_poses), its face.py's torchvision
    import stood in for while it is imported, as torch 2.13's CPU wheel has none."""
    controlnet_aux("open_pose.util", bare=("open_pose",))
    sys.modules.pop("controlnet_aux.open_pose")
    stand_in = types.ModuleType("torchvision.transforms")
    stand_in.ToTensor = stand_in.ToPILImage = object  # type: ignore[attr-defined]
    saved = {k: sys.modules.get(k) for k in ("torchvision", "torchvision.transforms")}
    sys.modules.update({"torchvision": types.ModuleType("torchvision"),
                        "torchvision.transforms": stand_in})
    try:
        return controlnet_aux("open_pose")
    finally:
        for key, value in saved.items():
            if value is None:
                del sys.modules[key]
            else:
                sys.modules[key] = value


def _picture() -> np.ndarray:
    rng = np.random.default_rng(4)
    small = rng.integers(0, 256, (13, 11, 3), dtype=np.uint8)
    return cv2.resize(small, (160, 200), interpolation=cv2.INTER_CUBIC)


def test_hand_and_face_modules_equal_the_detector(open_pose: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    hand_net, face_net = _StandIn(22, 1).eval(), _StandIn(71, 2, listed=True).eval()
    candidates = np.array([[*p, 1.0, 0] for person in _PEOPLE for p in person if p], float)
    candidates[:, 3] = np.arange(len(candidates))
    subset, k = -np.ones((len(_PEOPLE), 20)), 0
    for row, person in zip(subset, _PEOPLE):
        for j, point in enumerate(person):
            if point:
                row[j], k = k, k + 1
    hand, face = object.__new__(open_pose.Hand), object.__new__(open_pose.Face)
    hand.model, face.model = hand_net, face_net
    reference = open_pose.OpenposeDetector(
        _Body(candidates, subset, open_pose.Body.format_body_result), hand, face)

    def network(module: str, filename: str, build: Any, device: Any) -> Any:
        net = hand_net if "hand" in filename else face_net

        def run(planes: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                out = net(torch.from_numpy(planes))
            return (out[-1] if isinstance(out, list) else out).numpy()
        return run

    monkeypatch.setattr(openpose, "_network", network)
    monkeypatch.setattr(openpose, "_people_in_pixels", lambda bgr, device: [
        [None if p is None else (float(p[0]), float(p[1])) for p in person]
        for person in _PEOPLE])
    picture = _picture()
    with torch.no_grad():
        want = reference.detect_poses(picture, include_hand=True, include_face=True)
    ours = openpose.detect_poses(picture, hands=True, face=True)
    for got, expected in zip(ours, want, strict=True):
        for mine, theirs in ((got.left_hand, expected.left_hand),
                             (got.right_hand, expected.right_hand), (got.face, expected.face)):
            assert (mine is None) == (theirs is None)
            if theirs is not None:
                assert mine == [(float(p.x), float(p.y)) for p in theirs]
    first = ours[0]
    assert first.left_hand and first.right_hand and first.face and ours[1].right_hand
    assert ours[2].left_hand is None and ours[2].face is None
    assert sum(x > 0 for x, _ in first.left_hand) > 15 and len(first.face) > 30
    # each module through the registry: detect_poses asked for what it draws (answered
    # from the poses above), the map equal to draw_poses'
    monkeypatch.setattr(openpose, "detect_poses", lambda image, *, hands, face, device: [
        pose._replace(left_hand=pose.left_hand if hands else None,
                      right_hand=pose.right_hand if hands else None,
                      face=pose.face if face else None) for pose in ours])
    for module, (draw_body, hands, face) in openpose.POSE_MODULES.items():
        drawn = open_pose.draw_poses(want, 200, 160, draw_body=draw_body, draw_hand=hands,
                                     draw_face=face)
        if module != "openpose":  # (its body-only path is test_openpose's)
            np.testing.assert_array_equal(preprocess(module, picture), drawn, err_msg=module)
        assert drawn.any()


class _Body:
    def __init__(self, candidates: np.ndarray, subset: np.ndarray, fmt: Any) -> None:
        self.result, self.format_body_result = (candidates, subset), fmt

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.result


@pytest.mark.nodevice
def test_pose_json_of_the_hand_and_face_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """/controlnet/detect's JSON: the hands and face each module looks for, on the canvas the
    people were found in (the picture at the processor resolution, padded to 64s)."""
    hand = [(0.25, 0.5)] * 20 + [(-1 / 128, -1 / 64)]
    landmarks = [(0.5, 0.25)] * 70
    seen = []

    def detect(image: np.ndarray, *, hands: bool, face: bool, device: Any) -> Any:
        seen.append((image.shape[:2], hands, face))
        return [openpose.Pose([(0.5, 0.5)] + [None] * 17, hand if hands else None,
                              None, landmarks if face else None)]

    monkeypatch.setattr(openpose, "detect_poses", detect)
    picture = np.zeros((40, 77, 3), np.uint8)
    drawn, poses = openpose.openpose_with_json(picture, 64, module="openpose_full")
    person = poses["people"][0]
    assert seen[-1] == ((64, 128), True, True) and drawn.shape == (64, 123, 3)
    assert person["hand_left_keypoints_2d"][-3:] == [-1 / 128, -1 / 64, 1.0]
    assert person["hand_right_keypoints_2d"] is None
    assert person["face_keypoints_2d"] == [0.5, 0.25, 1.0] * 70
    _, poses = openpose.openpose_with_json(picture, 64, module="openpose_hand")
    assert poses["people"][0]["face_keypoints_2d"] is None and seen[-1][1:] == (True, False)
    _, poses = openpose.openpose_with_json(picture, 64, module="openpose_faceonly")
    assert poses["people"][0]["hand_left_keypoints_2d"] is None
    assert poses["people"][0]["face_keypoints_2d"] and seen[-1][1:] == (False, True)
