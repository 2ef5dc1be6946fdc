"""A test reference for dw_openpose_full: the ControlNet extension's DWPose steps (its
annotator/openpose wholebody.py, cv_ox_det.py and cv_ox_pose.py, which run the two ONNX files
with OpenCV's DNN module), written here with OpenCV for the pictures (cv2.resize,
cv2.getAffineTransform, cv2.warpAffine) and onnx's ReferenceEvaluator for the networks
(OpenCV 5's DNN module cannot read RTMPose's 3-D MatMuls), and controlnet_aux's openpose
drawing (the extension's).

    people = wholebody(picture, detector_model, pose_model)   # [n, 134, 3] (x, y, score)
    canvas = draw(people, height, width)                       # the extension's map
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from controlnet_aux_ref import controlnet_aux
from onnx.reference import ReferenceEvaluator

util = controlnet_aux("open_pose.util", bare=("open_pose",))
body = controlnet_aux("open_pose.body")

__all__ = ["draw", "wholebody"]


def _run(model: Any, x: np.ndarray) -> list[np.ndarray]:
    return ReferenceEvaluator(model).run(None, {model.graph.input[0].name: x})


def _boxes(picture: np.ndarray, model: Any) -> np.ndarray | None:
    size = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    ratio = min(size / picture.shape[0], size / picture.shape[1])
    scaled = cv2.resize(picture, (int(picture.shape[1] * ratio), int(picture.shape[0] * ratio)),
                        interpolation=cv2.INTER_LINEAR)
    padded = np.full((size, size, 3), 114, np.uint8)
    padded[:scaled.shape[0], :scaled.shape[1]] = scaled
    out = _run(model, np.ascontiguousarray(padded.transpose(2, 0, 1), np.float32)[None])[0][0]
    grid = np.concatenate([np.stack(np.meshgrid(np.arange(size // s), np.arange(size // s)),
                                    2).reshape(-1, 2) for s in (8, 16, 32)])
    stride = np.concatenate([np.full(((size // s) ** 2, 1), s) for s in (8, 16, 32)])
    out[:, :2] = (out[:, :2] + grid) * stride
    out[:, 2:4] = np.exp(out[:, 2:4]) * stride
    xyxy = np.ones_like(out[:, :4])
    xyxy[:, :2] = out[:, :2] - out[:, 2:4] / 2.0
    xyxy[:, 2:] = out[:, :2] + out[:, 2:4] / 2.0
    xyxy /= ratio
    scores = out[:, 4:5] * out[:, 5:]
    found = []
    for kind in range(scores.shape[1]):  # the demo's class-aware suppression
        valid = scores[:, kind] > 0.1
        if valid.any():
            boxes, kind_scores = xyxy[valid], scores[valid, kind]
            for i in _suppress(boxes, kind_scores):
                found.append([*boxes[i], kind_scores[i], kind])
    if not found:
        return None
    found_array = np.array(found)
    return found_array[(found_array[:, 4] > 0.3) & (found_array[:, 5] == 0), :4]


def _suppress(boxes: np.ndarray, scores: np.ndarray) -> list[int]:
    areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    order, keep = scores.argsort()[::-1], []
    while order.size:
        i = order[0]
        keep.append(i)
        low = np.maximum(boxes[i, :2], boxes[order[1:], :2])
        high = np.minimum(boxes[i, 2:], boxes[order[1:], 2:])
        inter = np.prod(np.maximum(0.0, high - low + 1), axis=1)
        order = order[1:][inter / (areas[i] + areas[order[1:]] - inter) <= 0.45]
    return keep


def _crop(picture: np.ndarray, box: np.ndarray, width: int, height: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    center = np.hstack([box[0] + box[2], box[1] + box[3]]) * 0.5
    w, h = (box[2] - box[0]) * 1.25, (box[3] - box[1]) * 1.25
    scale = np.hstack([w, w / (width / height)] if w > h * (width / height)
                      else [h * (width / height), h])
    src = np.float32([center, center + np.array([0.0, scale[0] * -0.5]), [0, 0]])
    src[2] = src[1] + [src[0, 1] - src[1, 1], src[1, 0] - src[0, 0]]
    dst = np.float32([[width / 2, height / 2], [width / 2, height / 2 - width / 2], [0, 0]])
    dst[2] = dst[1] + [dst[0, 1] - dst[1, 1], dst[1, 0] - dst[0, 0]]
    crop = cv2.warpAffine(picture, cv2.getAffineTransform(src, dst), (width, height),
                          flags=cv2.INTER_LINEAR)
    normal = (crop - np.array([123.675, 116.28, 103.53])) / np.array([58.395, 57.12, 57.375])
    return normal, center, scale


def _clear(simcc_x: np.ndarray, simcc_y: np.ndarray) -> np.ndarray:
    """[133, 1]: 1 where both peaks stand out of float32 noise (the runner-up 1e-4 of the
    largest value below), so that another float32 evaluation finds them too."""
    margins = []
    for simcc in (simcc_x, simcc_y):
        top = np.sort(simcc, axis=1)
        margins.append(top[:, -1] - top[:, -2] > 1e-4 * np.abs(simcc).max())
    return (margins[0] & margins[1]).astype(float)[:, None]


def wholebody(picture: np.ndarray, detector: Any, pose: Any) -> np.ndarray | None:
    """The extension's Wholebody(picture): [n, 134, 4] in openpose's body order (x, y,
    score, and 1 where the keypoint's peaks are clear of float32 ties), or None."""
    boxes = _boxes(picture, detector)
    if boxes is None:
        return None
    dims = pose.graph.input[0].type.tensor_type.shape.dim
    height, width = dims[2].dim_value, dims[3].dim_value
    if len(boxes) == 0:
        boxes = np.array([[0, 0, picture.shape[1], picture.shape[0]]])
    people = []
    for box in boxes:
        crop, center, scale = _crop(picture, box, width, height)
        simcc_x, simcc_y = _run(pose, crop.transpose(2, 0, 1)[None].astype(np.float32))
        locations = np.stack([simcc_x[0].argmax(1), simcc_y[0].argmax(1)], -1).astype(
            np.float32)
        values = np.minimum(simcc_x[0].max(1), simcc_y[0].max(1))
        locations[values <= 0] = -1
        points = locations / 2.0 / (width, height) * scale + center - scale / 2
        people.append(np.concatenate([points, values[:, None], _clear(simcc_x[0], simcc_y[0])],
                                     axis=1))
    info = np.array(people)
    neck = info[:, [5, 6]].mean(axis=1)
    neck[:, 2] = (info[:, 5, 2] > 0.3) & (info[:, 6, 2] > 0.3)
    neck[:, 3] = info[:, 5, 3] * info[:, 6, 3]
    info = np.insert(info, 17, neck, axis=1)
    info[:, [1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17]] = info[
        :, [17, 6, 8, 10, 7, 9, 12, 14, 16, 13, 15, 2, 1, 4, 3]]
    return info


def _keypoints(points: np.ndarray, seen: np.ndarray) -> list[Any] | None:
    found = [body.Keypoint(float(x), float(y)) if ok else None
             for (x, y), ok in zip(points, seen)]
    return None if not seen.any() else found


def draw(people: np.ndarray | None, height: int, width: int) -> np.ndarray:
    """Each person drawn in turn, as the extension's draw_poses: body, hands, then the face
    (its 68 points and the two eyes), keypoints under 0.3 left out, with controlnet_aux's
    openpose drawing (the extension's; normalized coordinates)."""
    canvas = np.zeros((height, width, 3), np.uint8)
    for person in [] if people is None else people:
        points = person[:, :2] / (width, height)
        seen = person[:, 2] >= 0.3
        canvas = util.draw_bodypose(canvas, _keypoints(points[:18], seen[:18]) or [None] * 18)
        for part in (slice(92, 113), slice(113, 134)):
            canvas = util.draw_handpose(canvas, _keypoints(points[part], seen[part]))
        face = _keypoints(points[24:92], seen[24:92])
        if face is not None:
            face += _keypoints(points[[14, 15]], np.array([True, True]))
            face[-2:] = [p if ok else None for p, ok in zip(face[-2:], seen[[14, 15]])]
        canvas = util.draw_facepose(canvas, face)
    return canvas
