"""YOLOv8 detection on gpustd against ultralytics' own model on the same random weights: the
raw decoded predictions, and the boxes of `predict` (letterbox, NMS, scaled back) on pictures
that are not multiples of 32; the .pt read without running its pickle, and checked (the server,
before it queues a job) from its pickle alone."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from yolo_tiny import blobs, nms_in_torch, torch, write_tiny_yolo

import gpustd
from diffusion.detection import check_yolo, detect, load_yolo
from diffusion.detection.boxes import letterbox
from diffusion.detection.yolo import decode
from diffusion.loaders import WeightsError
from diffusion.loaders.formats.torch_file import TorchFile


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    path = tmp_path_factory.mktemp("yolo") / "face_tiny.pt"
    model = write_tiny_yolo(path)
    return path, model, load_yolo(path)


def test_predictions_equal_ultralytics(files):
    _, model, yolo = files
    x = letterbox(blobs(200, 300), 320)
    assert x.shape == (1, 3, 224, 320)
    with torch.no_grad():
        expected = model(torch.from_numpy(x))[0][0].numpy()  # [4 + classes, anchors]
    boxes, scores = decode(yolo.network(gpustd.asarray(x)), x.shape[-2:],
                           yolo.network.reg_max, yolo.network.dfl)
    np.testing.assert_allclose(boxes, expected[:4].T, atol=0.05)  # pixels
    np.testing.assert_allclose(scores, expected[4:].T, atol=2e-4)
    assert scores.max() - scores.min() > 0.3  # the picture and the weights matter


def test_segmentation_models_boxes_equal_ultralytics(tmp_path):
    """YOLOv8-seg (person_yolov8n-seg.pt): its Detect part's boxes and scores."""
    model = write_tiny_yolo(tmp_path / "person_tiny-seg.pt", seed=2, segment=True)
    yolo = load_yolo(tmp_path / "person_tiny-seg.pt")
    x = letterbox(blobs(90, 120, seed=5), 128)
    with torch.no_grad():
        expected = model(torch.from_numpy(x))[0][0].numpy()
    boxes, scores = decode(yolo.network(gpustd.asarray(x)), x.shape[-2:],
                           yolo.network.reg_max, yolo.network.dfl)
    np.testing.assert_allclose(boxes, expected[:4].T, atol=0.05)
    np.testing.assert_allclose(scores, expected[4:6].T, atol=2e-4)


def test_boxes_equal_ultralytics_predict(files):
    from ultralytics import YOLO

    path, _, yolo = files
    picture = blobs(228, 320, seed=3)  # letterboxed without a resize: 2 grey rows each side
    found = detect(yolo, picture, confidence=0.55, image_size=320)
    with nms_in_torch():
        result = YOLO(str(path)).predict(picture[..., ::-1].copy(), conf=0.55, imgsz=320,
                                         verbose=False)[0].boxes
    assert 3 < len(found.scores) == len(result.conf)
    np.testing.assert_allclose(found.boxes, result.xyxy.numpy(), atol=0.05)
    np.testing.assert_allclose(found.scores, result.conf.numpy(), atol=1e-3)
    np.testing.assert_array_equal(found.classes, result.cls.numpy().astype(int))
    assert yolo.names == {0: "class0", 1: "class1"}


@pytest.mark.parametrize("size", [(250, 333), (114, 160), (700, 301)])
def test_letterbox_equals_ultralytics(size):
    """Scaled (cv2's bilinear, to one level: the network amplifies a level's difference into
    another order of near-equal boxes, so predict is compared above without a resize)."""
    from ultralytics.data.augment import LetterBox

    picture = blobs(*size)
    expected = LetterBox((320, 320), auto=True, stride=32)(image=picture)
    ours = letterbox(picture, 320)[0].transpose(1, 2, 0) * 255
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() <= 1.001


def test_code_in_the_pickle_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, path, pickle_protocol=2)
    with pytest.raises(WeightsError, match="print"):
        load_yolo(path)
    path.write_bytes(pickle.dumps({"model": 1}))
    with pytest.raises(WeightsError):
        load_yolo(path)


@pytest.mark.nodevice
def test_the_check_reads_the_structure_not_the_tensors(tmp_path, monkeypatch):
    path = tmp_path / "face_tiny.pt"
    model = write_tiny_yolo(path)

    def never(*args):
        raise AssertionError("a tensor was read")
    monkeypatch.setattr(TorchFile, "read", never)
    check_yolo(path)  # a YOLOv8 file passes, its tensors unread
    torch.save(model.state_dict(), path)  # weights without the model
    with pytest.raises(WeightsError, match="not an ultralytics YOLO file"):
        check_yolo(path)
    other = copy.deepcopy(model)
    other.model[1] = torch.nn.ReLU()  # a layer of a kind YOLOv8 does not use
    torch.save({"model": other}, path)
    with pytest.raises(WeightsError, match=r"layer model\.1 is a ReLU, which YOLOv8 detection"):
        check_yolo(path)
    other = copy.deepcopy(model)
    other.model[-1].end2end = True
    torch.save({"model": other}, path)
    with pytest.raises(WeightsError, match=r"end-to-end \(YOLOv10\) head"):
        check_yolo(path)
