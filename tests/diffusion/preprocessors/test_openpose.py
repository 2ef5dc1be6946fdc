"""openpose against controlnet_aux's OpenposeDetector on the same random body network, saved
as body_pose_model.pth (its flat layer names) with torch.save; its drawing against OpenCV's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is a test-only reference "
                                        "(extra: reference)")
torch = pytest.importorskip("torch", reason="torch is a test-only reference (extra: reference)")
pytest.importorskip("scipy", reason="controlnet_aux's openpose needs scipy (extra: reference)")
from controlnet_aux_ref import controlnet_aux  # noqa: E402

import gpucore  # noqa: E402
from diffusion.loaders.control import annotator_file  # noqa: E402
from diffusion.preprocessors import openpose, pose_draw, preprocess  # noqa: E402

# open_pose's own __init__ (OpenposeDetector) imports face.py, and so torchvision: its parts
util = controlnet_aux("open_pose.util", bare=("open_pose",))  # first: it imports body
body = controlnet_aux("open_pose.body")
model = controlnet_aux("open_pose.model")


def _picture(seed: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 16, width // 6, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def body_network(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A random bodypose_model whose maps keep their size through its 30 layers, its part
    affinity fields leaning positive (so that limbs join); saved as the annotator file."""
    folder = tmp_path_factory.mktemp("annotators")
    (folder / "openpose").mkdir()
    torch.manual_seed(3)
    network = model.bodypose_model().eval()  # torch's own init, scaled up
    with torch.no_grad():
        for name, value in network.named_parameters():
            if name.endswith("weight"):
                value.mul_(8**0.5)
        network.model6_1.Mconv7_stage6_L1.bias.add_(0.5)
    flat = {name.split(".", 1)[1]: value.half() for name, value in network.state_dict().items()}
    torch.save(flat, folder / "openpose" / "body_pose_model.pth")
    return body.Body(str(folder / "openpose" / "body_pose_model.pth")), folder


def test_openpose_equals_the_detector(first_device: gpucore.Device,
                                      body_network: tuple[Any, Path],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """People and their keypoints equal Body's (at least one found; each keypoint within a
    pixel), the JSON holds them as the extension's encode_poses_as_dict, and the map equals
    draw_bodypose's pixels of them.
    368 rows: scaled to the network's 184 by an exact halving; 34 columns: halved to 17,
    padded to 24."""
    reference, folder = body_network
    monkeypatch.setenv(annotator_file.ENV_VAR, str(folder))
    picture = _picture(7, 368, 34)
    candidates, people = reference(picture[:, :, ::-1].copy())
    assert len(people) >= 1
    want = [[None if index < 0 else (candidates[index][0] / 34, candidates[index][1] / 368)
             for index in person[:18].astype(int)] for person in people]
    taken: list[Any] = []  # what detect_people gives the map while preprocess runs
    detect = openpose.detect_people
    monkeypatch.setattr(openpose, "detect_people", lambda image, *, device=None: (
        taken.append(detect(image, device=device)) or taken[-1]))
    ours = preprocess("openpose", picture, device=first_device)
    found = taken[0]
    # The same people and keypoints, each within a pixel: a peak sits one pixel over where two
    # neighbouring heatmap values tie to float32's last bits (a CPU adapter's 1x1 convs sum K
    # unsplit; measured: one keypoint of this picture 1/368 apart).
    assert [[p is None for p in person] for person in found] == \
        [[p is None for p in person] for person in want]
    pairs = [(g, w) for gp, wp in zip(found, want) for g, w in zip(gp, wp) if g is not None]
    assert max(max(abs(g[0] - w[0]) * 34, abs(g[1] - w[1]) * 368) for g, w in pairs) <= 1.001
    poses = openpose.pose_json(found, 368, 34)
    assert (poses["canvas_height"], poses["canvas_width"]) == (368, 34)
    first = poses["people"][0]["pose_keypoints_2d"]
    assert len(first) == 54 and first[2::3] == [0.0 if p is None else 1.0 for p in want[0]]

    drawn = np.zeros((368, 34, 3), np.uint8)  # OpenposeDetector's draw_poses, the body
    for person in found:
        util.draw_bodypose(drawn, [None if p is None else body.Keypoint(*p) for p in person])
    np.testing.assert_array_equal(ours, drawn)
    assert ours.any()


@pytest.mark.nodevice
def test_drawing_equals_opencvs() -> None:
    """Ellipses (ellipse2Poly), filled polygons and circles, at edges too, pixel for pixel."""
    rng = np.random.default_rng(1)
    for _ in range(60):
        centre = (int(rng.integers(-5, 70)), int(rng.integers(-5, 60)))
        axes, angle = (int(rng.integers(0, 90)), 4), int(rng.integers(-180, 181))
        polygon = cv2.ellipse2Poly(centre, axes, angle, 0, 360, 1)
        assert pose_draw.ellipse_polygon(centre, axes, angle) == [tuple(p) for p in polygon]
        want, ours = np.zeros((2, 57, 65, 3), np.uint8)
        cv2.fillConvexPoly(want, polygon, [10, 20, 30])
        pose_draw.fill_convex_polygon(ours, [tuple(p) for p in polygon], [10, 20, 30])
        cv2.circle(want, centre, 4, (1, 2, 3), thickness=-1)
        pose_draw.fill_circle(ours, centre, 4, (1, 2, 3))
        np.testing.assert_array_equal(ours, want)

