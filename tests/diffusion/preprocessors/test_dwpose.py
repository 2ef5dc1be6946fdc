"""dw_openpose_full: the ONNX reader and interpreter against onnx's ReferenceEvaluator (and
OpenCV's DNN module where it reads the graph) on tiny random graphs of DWPose's structure,
the picture geometry against OpenCV, and the whole detector against the extension's steps
(tests/dwpose_ref.py) on the same files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx reads DWPose's graphs (extra: dwpose)")
cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is a test-only reference "
                                        "(extra: reference)")
import dwpose_ref  # noqa: E402
import dwpose_tiny  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import gpucore  # noqa: E402
from diffusion.loaders.control import annotator_file  # noqa: E402
from diffusion.loaders.errors import WeightsError  # noqa: E402
from diffusion.loaders.formats.onnx_file import read_onnx  # noqa: E402
from diffusion.models.annotators.onnx_network import OnnxNetwork  # noqa: E402
from diffusion.models.annotators.onnx_ops import UnsupportedOnnx  # noqa: E402
from diffusion.preprocessors import dwpose, dwpose_geometry, module_list, preprocess  # noqa: E402
from diffusion.preprocessors.resize import resize_with_pad  # noqa: E402


def _network(model: object, folder: Path, device: gpucore.Device) -> OnnxNetwork:
    path = folder / "graph.onnx"
    onnx.save(model, path)
    return OnnxNetwork(read_onnx(path), device=device)


def _reference(model: object, x: np.ndarray) -> list[np.ndarray]:
    return ReferenceEvaluator(model).run(None, {model.graph.input[0].name: x})


def _close(ours: np.ndarray, reference: np.ndarray) -> None:
    assert ours.shape == reference.shape
    scale = float(np.abs(reference).max())
    np.testing.assert_allclose(ours, reference, rtol=0, atol=2e-5 * max(scale, 1.0))


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, object]:
    """The two tiny graphs saved as the annotator folder lays them out (one module's
    worth: the software adapters compile their kernels once)."""
    folder = tmp_path_factory.mktemp("annotators")
    detector, pose = dwpose_tiny.detector_graph(), dwpose_tiny.pose_graph()
    dwpose_tiny.write_annotators(folder, detector=detector, pose=pose)
    return folder, detector, pose


def test_both_networks_equal_onnx_reference(first_device: gpucore.Device,
                                            graphs: tuple[Path, object, object]) -> None:
    """YOLOX's and RTMPose's structure (tiny, random): our outputs equal onnx's reference
    to float32 error, and the detector's OpenCV DNN's; a different input changes them."""
    folder, detector, pose = graphs
    rng = np.random.default_rng(5)
    path = folder / "openpose" / "yolox_l.onnx"
    assert {"Slice", "MaxPool", "Resize", "Transpose"} <= read_onnx(path).op_types()
    network = OnnxNetwork(read_onnx(path), device=first_device)
    pictures = rng.uniform(0, 255, (2, 1, 3, 64, 64)).astype(np.float32)
    outputs = [network(p)[0].numpy() for p in pictures]
    _close(outputs[0], _reference(detector, pictures[0])[0])
    dnn = cv2.dnn.readNetFromONNX(str(path))
    dnn.setInput(pictures[0])
    _close(outputs[0], dnn.forward().reshape(outputs[0].shape))
    assert np.abs(outputs[0] - outputs[1]).max() > 0.1

    network = OnnxNetwork(read_onnx(folder / "openpose" / "dw-ll_ucoco_384.onnx"),
                          device=first_device)
    crops = rng.uniform(-2, 2, (2, 1, 3, 32, 24)).astype(np.float32)
    ours = [[o.numpy() for o in network(crop)] for crop in crops]
    for mine, theirs in zip(ours[0], _reference(pose, crops[0])):
        _close(mine, theirs)
    assert ours[0][0].shape == (1, 133, 48) and np.abs(ours[0][0] - ours[1][0]).max() > 1


def _node_graph(nodes: list[object], shape: list[int], weights: dict[str, np.ndarray],
                opset: int = 17) -> object:
    graph = helper.make_graph(
        nodes, "ops", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_other_operators_and_shape_arithmetic(first_device: gpucore.Device,
                                              tmp_path: Path) -> None:
    """What else exports write: grouped Conv with uneven pads, BatchNormalization left beside
    it, Gather, strided padded MaxPool, a 3x nearest Resize (half_pixel), Softmax, Gemm,
    LayerNormalization, HardSwish, ReduceMean, and a Reshape whose shape comes from Shape,
    Gather and Concat at run time."""
    rng = np.random.default_rng(7)
    weights = {
        "w": rng.standard_normal((6, 2, 3, 3)).astype(np.float32),
        "b": rng.standard_normal(6).astype(np.float32),
        "scales": np.array([1, 1, 3, 3], np.float32), "zero": np.array(0, np.int64),
        "tail": np.array([-1], np.int64), "g": rng.standard_normal((5, 7)).astype(np.float32),
        "gb": rng.standard_normal(7).astype(np.float32), "ln": rng.random(7).astype(np.float32),
        "lb": rng.standard_normal(7).astype(np.float32),
        "bn_scale": rng.random(6).astype(np.float32) + 0.5,
        "bn_bias": rng.standard_normal(6).astype(np.float32),
        "bn_mean": rng.standard_normal(6).astype(np.float32),
        "bn_var": rng.random(6).astype(np.float32) + 0.1, "pick": np.array([2, 0], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], group=2, pads=[1, 0, 2, 1],
                         strides=[1, 2]),
        helper.make_node("BatchNormalization", ["c", "bn_scale", "bn_bias", "bn_mean",
                                                "bn_var"], ["bn"]),
        helper.make_node("Gather", ["bn", "pick"], ["picked"], axis=1),
        helper.make_node("HardSwish", ["picked"], ["h"]),
        helper.make_node("MaxPool", ["h"], ["m"], kernel_shape=[3, 2], strides=[2, 1],
                         pads=[1, 1, 1, 0]),
        helper.make_node("Resize", ["m", "", "scales"], ["r"], mode="nearest"),
        helper.make_node("ReduceMean", ["r"], ["p"], axes=[1], keepdims=1),
        helper.make_node("Shape", ["p"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"]),
        helper.make_node("Unsqueeze", ["n", "tail_axes"], ["n1"]),
        helper.make_node("Concat", ["n1", "tail"], ["shape"], axis=0),
        helper.make_node("Reshape", ["p", "shape"], ["flat"]),
        helper.make_node("Slice", ["flat", "zero1", "five", "one"], ["cut"]),
        helper.make_node("Gemm", ["cut", "g", "gb"], ["lin"], alpha=0.5),
        helper.make_node("LayerNormalization", ["lin", "ln", "lb"], ["norm"]),
        helper.make_node("Softmax", ["norm"], ["y"], axis=-1),
    ]
    weights.update(tail_axes=np.array([0], np.int64), zero1=np.array([0], np.int64),
                   five=np.array([5], np.int64), one=np.array([1], np.int64))
    model = _node_graph(nodes, [2, 4, 9, 11], weights)
    x = rng.standard_normal((2, 4, 9, 11)).astype(np.float32)
    ours = _network(model, tmp_path, first_device)(x)[0].numpy()
    _close(ours, _reference(model, x)[0])
    # opset 10's Resize (x, scales), as older YOLOX exports write it (onnx.reference reads
    # its scales from the wrong input)
    model = _node_graph([helper.make_node("Resize", ["x", "scales"], ["y"], mode="nearest")],
                        [1, 2, 3, 5], {"scales": np.array([1, 1, 2, 2], np.float32)}, opset=10)
    x = rng.standard_normal((1, 2, 3, 5)).astype(np.float32)
    expected = x.repeat(2, axis=2).repeat(2, axis=3)  # its only mode: asymmetric, floor
    _close(_network(model, tmp_path, first_device)(x)[0].numpy(), expected)


def test_reader_refuses_in_one_line(first_device: gpucore.Device, tmp_path: Path) -> None:
    """Not an ONNX file, and an operator the interpreter lacks: one line each naming it."""
    (tmp_path / "bad.onnx").write_bytes(b"\x00not a model")
    with pytest.raises(WeightsError, match="not an ONNX model") as raised:
        read_onnx(tmp_path / "bad.onnx")
    assert "\n" not in str(raised.value)
    model = _node_graph([helper.make_node("Einsum", ["x", "x"], ["y"], equation="ij,ij->ij")],
                        [2, 2], {})
    with pytest.raises(UnsupportedOnnx, match="Einsum"):
        _network(model, tmp_path, first_device)


@pytest.mark.parametrize(("size", "target"), [((50, 37), (64, 47)), ((33, 91), (20, 55)),
                                               ((40, 30), (40, 30))])
def test_resize_and_warp_equal_opencv(size: tuple[int, int], target: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(size))
    picture = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    ours = dwpose_geometry.resize_linear(picture, target[1], target[0])
    theirs = cv2.resize(picture, (target[1], target[0]), interpolation=cv2.INTER_LINEAR)
    assert np.abs(ours.astype(int) - theirs).max() <= 1
    assert (ours != theirs).mean() < 0.01
    box = np.array([-6.5, 3.25, size[1] * 0.8, size[0] + 4.0])
    center, scale = dwpose_geometry.box_center_scale(box, 0.75)
    matrix = dwpose_geometry.affine_matrix(center, scale, 24, 32)
    ours = dwpose_geometry.warp_affine(picture, matrix, 24, 32)
    theirs = cv2.warpAffine(picture, matrix, (24, 32), flags=cv2.INTER_LINEAR)
    assert np.abs(ours.astype(int) - theirs).max() <= 1
    assert (ours != theirs).mean() < 0.005


def test_detector_equals_the_extensions_steps(first_device: gpucore.Device,
                                              graphs: tuple[Path, object, object],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """People (several), their 134 keypoints and scores equal the extension's Wholebody on
    the same files; the map equals its drawing (a 64-pixel-wide picture: the detector's
    letterbox is the picture itself)."""
    folder, detector, pose = graphs
    monkeypatch.setenv(annotator_file.ENV_VAR, str(folder))
    rng = np.random.default_rng(11)
    picture = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (64, 48),
                         interpolation=cv2.INTER_CUBIC)
    expected = dwpose_ref.wholebody(picture, detector, pose)
    assert expected is not None and len(expected) >= 2
    poses = dwpose.detect_wholebody(picture, device=first_device)
    assert len(poses) == len(expected)
    clear = expected[:, :, 3] == 1
    assert clear.mean() > 0.9  # the rest: argmax ties within float32 error
    for found, person, sure in zip(poses, expected, clear):
        seen = person[:, 2] >= 0.3
        assert seen.sum() > 20
        for ours, part in ((found.body, slice(0, 18)), (found.left_hand, slice(92, 113)),
                           (found.right_hand, slice(113, 134)),
                           (found.face and found.face[:68], slice(24, 92))):
            ours = ours or [None] * (part.stop - part.start)
            for point, (x, y, score, _), certain in zip(ours, person[part], sure[part]):
                if certain and abs(score - 0.3) > 1e-4:
                    assert (point is None) == (score < 0.3)
                    if point is not None:
                        np.testing.assert_allclose(np.multiply(point, (64, 48)), (x, y),
                                                   atol=1e-3)
    at_64, poses_json = dwpose.dw_openpose_with_json(picture, 64, device=first_device)
    np.testing.assert_array_equal(at_64, preprocess("dw_openpose_full", picture, resolution=64,
                                                    device=first_device))
    padded, _ = resize_with_pad(picture, 64)  # 64 x 85, padded to 64 x 128
    in_pixels = dwpose.detect_wholebody(padded, pixels=True, device=first_device)
    assert len(poses_json["people"]) == len(in_pixels) and poses_json["canvas_width"] == 128
    for person, found in zip(poses_json["people"], in_pixels):
        flat = [v for p in found.body for v in ((*p, 1.0) if p else (0, 0, 0))]
        assert person["pose_keypoints_2d"] == flat
    ours = preprocess("dw_openpose_full", picture, device=first_device)
    theirs = dwpose_ref.draw(expected, 48, 64)
    assert ours.any()
    if clear.all():
        np.testing.assert_array_equal(ours, theirs)
    else:
        assert (ours != theirs).any(axis=2).mean() < 0.03


def test_module_and_missing_files(first_device: gpucore.Device, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """dw_openpose_full is one of the modules; without its files, one line names them."""
    assert "dw_openpose_full" in module_list()
    monkeypatch.setenv(annotator_file.ENV_VAR, str(tmp_path))
    with pytest.raises(WeightsError, match=r"yolox_l\.onnx") as raised:
        preprocess("dw_openpose_full", np.zeros((40, 40, 3), np.uint8), device=first_device)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("objectness", "people"), [(3.0, 1), (-30.0, 0)])
def test_no_person_box(first_device: gpucore.Device, graphs: tuple[Path, object, object],
                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch, objectness: float,
                       people: int) -> None:
    """Only other classes seen: the whole picture is one person's box, as the extension's;
    nothing seen: no one, a black map."""
    pose = graphs[2]
    detector = dwpose_tiny.detector_graph(person_bias=-30.0, objectness_bias=objectness)
    dwpose_tiny.write_annotators(tmp_path, detector=detector, pose=pose)
    monkeypatch.setenv(annotator_file.ENV_VAR, str(tmp_path))
    picture = np.random.default_rng(2).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    expected = dwpose_ref.wholebody(picture, detector, pose)
    found = dwpose.detect_wholebody(picture, device=first_device)
    assert len(found) == people == (0 if expected is None else len(expected))
    if people:
        seen = expected[0, :18, 2] >= 0.3
        mine = np.array([(-1, -1) if p is None else p for p in found[0].body]) * (56, 40)
        np.testing.assert_allclose(mine[seen], expected[0, :18][seen, :2], atol=1e-3)
    else:
        assert not preprocess("dw_openpose_full", picture, device=first_device).any()


def test_files_swapped_are_named(first_device: gpucore.Device,
                                 graphs: tuple[Path, object, object], tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A pose file that is not DWPose's (one output here) is refused in one line."""
    detector, pose = graphs[1], graphs[2]
    broken = onnx.ModelProto()
    broken.CopyFrom(pose)
    del broken.graph.output[1]
    dwpose_tiny.write_annotators(tmp_path, detector=detector, pose=broken)
    monkeypatch.setenv(annotator_file.ENV_VAR, str(tmp_path))
    picture = np.random.default_rng(11).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"dw-ll_ucoco_384\.onnx") as raised:
        preprocess("dw_openpose_full", picture, device=first_device)
    assert "\n" not in str(raised.value)
