"""`dw_openpose_full`: DWPose's whole-body keypoints (body, feet, face, hands) drawn as the
ControlNet extension's openpose map, from its two ONNX files in the annotator folder's
`openpose/`: yolox_l.onnx (YOLOX-L, the people's boxes) and dw-ll_ucoco_384.onnx (RTMPose's
133 keypoints of each person). Both run on the GPU through diffusion's ONNX interpreter
(models.annotators.onnx_network); reading them needs the onnx package (extra: dwpose).

As the extension's `Wholebody` (annotator/openpose/wholebody.py) with OpenCV's DNN module:
1. the picture (as given, RGB) letterboxed into the detector's square (640 x 640 for
   yolox_l) over grey 114, its boxes decoded on the strides 8, 16, 32 grids, suppressed
   per class (IoU 0.45, scores over 0.1), the people's (class 0) over 0.3 kept; no box
   while something else was seen: the whole picture as one box;
2. each box grown by 1.25 to the pose network's aspect (288 x 384), cut out by an affine
   warp, normalized by ImageNet's mean and deviation, through the pose network;
3. SimCC decoding (each keypoint where its x and y distributions peak, halved; its score
   the smaller peak) mapped back to the picture; a neck added between the shoulders and
   the first 18 reordered to openpose's body;
4. keypoints scoring at least 0.3 drawn: body, hands and face (its 68 points and the eyes)
   with the openpose module's drawing (pose_draw).

    people = detect_wholebody(picture)      # [Pose(body, left_hand, right_hand, face)]
    detected = dw_openpose_full(picture)    # uint8 HxWx3
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray

from ..loaders.formats.onnx_file import read_onnx
from ..models.annotators.onnx_network import OnnxNetwork
from .annotators import annotator_model
from .dwpose_geometry import affine_matrix, box_center_scale, letterbox, nms, warp_affine
from .openpose import Pose, draw_poses, pose_json
from .resize import resize_with_pad

__all__ = ["detect_boxes", "detect_wholebody", "dw_openpose_full", "dw_openpose_with_json",
           "wholebody_keypoints"]

_KEYPOINTS = 133  # COCO-WholeBody: 17 body, 6 feet, 68 face, 2 x 21 hands
_MEAN = np.array([123.675, 116.28, 103.53])
_STD = np.array([58.395, 57.12, 57.375])
_OPENPOSE_ORDER = [1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17]
_MMPOSE_ORDER = [17, 6, 8, 10, 7, 9, 12, 14, 16, 13, 15, 2, 1, 4, 3]


def _network(filename: str, device: Device | None) -> OnnxNetwork:
    return annotator_model("dw_openpose_full", "openpose", filename,
                           lambda graph, device: OnnxNetwork(graph, device=device), device,
                           read=read_onnx)


def _on_device(network: OnnxNetwork, planes: np.ndarray) -> Tensor:
    """A network's input uploaded (a Tensor input is what annotators' replay records)."""
    return asarray(np.ascontiguousarray(planes, np.float32), device=network.device)


def _input_size(network: OnnxNetwork, default: tuple[int, int]) -> tuple[int, int]:
    """The (height, width) the graph declares for its picture (default where it names
    them instead)."""
    shape = network.graph.input_shapes[network.input_names[0]]
    if len(shape) == 4 and shape[2] is not None and shape[3] is not None:
        return shape[2], shape[3]
    return default


def detect_boxes(image: np.ndarray, network: OnnxNetwork) -> np.ndarray | None:
    """The people's boxes (x1, y1, x2, y2 in pixels, float32 [n, 4]) YOLOX finds in a
    uint8 HxWx3 picture; None where it finds nothing of any class."""
    height, width = _input_size(network, (640, 640))
    padded, ratio = letterbox(image, height, width)
    planes = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], np.float32)
    predictions = network(_on_device(network, planes))[0].numpy()[0]
    grids, strides = [], []
    for stride in (8, 16, 32):
        xs, ys = np.meshgrid(np.arange(width // stride), np.arange(height // stride))
        grids.append(np.stack((xs, ys), 2).reshape(-1, 2))
        strides.append(np.full((grids[-1].shape[0], 1), stride))
    if predictions.shape[0] != sum(g.shape[0] for g in grids):
        raise ValueError(f"the detector gave {predictions.shape[0]} predictions, but its "
                         f"{width}x{height} input has {sum(g.shape[0] for g in grids)} "
                         "cells on the strides 8, 16, 32; give YOLOX's yolox_l.onnx")
    predictions[:, :2] = (predictions[:, :2] + np.concatenate(grids)) * np.concatenate(strides)
    predictions[:, 2:4] = np.exp(predictions[:, 2:4]) * np.concatenate(strides)
    centre, size = predictions[:, :2], predictions[:, 2:4]
    boxes = np.concatenate([centre - size / 2.0, centre + size / 2.0], axis=1) / ratio
    scores = predictions[:, 4:5] * predictions[:, 5:]
    if not (scores > 0.1).any():
        return None  # the extension's multiclass NMS found no class at all
    person = scores[:, 0] > 0.1
    boxes, person_scores = boxes[person], scores[person, 0]
    kept = nms(boxes, person_scores, 0.45)
    # float64 from here, as the extension's detections array (scores beside class numbers)
    return boxes[kept][person_scores[kept] > 0.3].astype(np.float64)


def wholebody_keypoints(image: np.ndarray, boxes: np.ndarray, network: OnnxNetwork
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The 133 COCO-WholeBody keypoints of each box's person (x, y in pixels, [n, 133, 2])
    and their scores ([n, 133]) by the pose network; no box: the whole picture as one."""
    height, width = _input_size(network, (384, 288))
    if len(boxes) == 0:
        boxes = np.array([[0, 0, image.shape[1], image.shape[0]]])
    batch = network.graph.input_shapes[network.input_names[0]][0]
    crops, centers, scales = [], [], []
    for box in boxes:
        center, scale = box_center_scale(box, width / height)
        crop = warp_affine(image, affine_matrix(center, scale, width, height), width, height)
        crops.append(((crop - _MEAN) / _STD).transpose(2, 0, 1).astype(np.float32))
        centers.append(center)
        scales.append(scale)
    if batch is None:
        outputs = [np.asarray(o.numpy()) for o in network(_on_device(network, np.stack(crops)))]
    else:  # a graph made for one crop at a time
        runs = [network(_on_device(network, crop[None])) for crop in crops]
        outputs = [np.concatenate([run[i].numpy() for run in runs])
                   for i in range(len(runs[0]))]
    if len(outputs) != 2 or outputs[0].shape[1] != _KEYPOINTS:
        raise ValueError(f"the pose network gave {len(outputs)} output(s) of shapes "
                         f"{[o.shape for o in outputs]}; give DWPose's dw-ll_ucoco_384.onnx "
                         f"(simcc_x and simcc_y of {_KEYPOINTS} keypoints)")
    simcc_x, simcc_y = outputs
    locations = np.stack([simcc_x.argmax(axis=2), simcc_y.argmax(axis=2)], -1).astype(
        np.float32)
    values = np.minimum(simcc_x.max(axis=2), simcc_y.max(axis=2))
    locations[values <= 0] = -1
    keypoints = (locations / 2.0 / np.array([width, height]) * np.array(scales)[:, None]
                 + np.array(centers)[:, None] - np.array(scales)[:, None] / 2)
    return keypoints, values


def _openpose_order(keypoints: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """[n, 134, 3] (x, y, score): a neck between the shoulders (scored 1 where both score
    over 0.3, else 0) inserted at 17, and the body reordered as openpose numbers it."""
    info = np.concatenate([keypoints, scores[..., None]], axis=-1)
    neck = info[:, [5, 6]].mean(axis=1)
    neck[:, 2] = np.logical_and(info[:, 5, 2] > 0.3, info[:, 6, 2] > 0.3).astype(int)
    info = np.insert(info, 17, neck, axis=1)
    info[:, _OPENPOSE_ORDER] = info[:, _MMPOSE_ORDER]
    return info


def _part(points: np.ndarray, height: float, width: float) -> list[Any] | None:
    found = [(float(x) / width, float(y) / height) if score >= 0.3 else None
             for x, y, score in points]
    return None if all(point is None for point in found) else found


def detect_wholebody(image: np.ndarray, *, pixels: bool = False,
                     device: Device | None = None) -> list[Pose]:
    """Each person of a uint8 HxWx3 picture: 18 body keypoints, the left and right hands'
    21 and the face's 68 landmarks (and the two eyes), as fractions of the picture's width
    and height (in pixels with `pixels`, as the extension keeps them); None where a
    keypoint (or a whole part) scored under 0.3."""
    detector = _network("yolox_l.onnx", device)
    boxes = detect_boxes(image, detector)
    if boxes is None:
        return []
    keypoints, scores = wholebody_keypoints(
        image, boxes, _network("dw-ll_ucoco_384.onnx", device))
    height, width = (1.0, 1.0) if pixels else image.shape[:2]
    poses = []
    for person in _openpose_order(keypoints, scores):
        body = _part(person[:18], height, width) or [None] * 18
        face = _part(person[24:92], height, width)
        if face is not None:
            face = [*face, body[14], body[15]]
        poses.append(Pose(body, _part(person[92:113], height, width),
                          _part(person[113:134], height, width), face))
    return poses


def dw_openpose_full(image: np.ndarray, *, device: Device | None = None) -> np.ndarray:
    """The extension's dw_openpose_full map of a uint8 HxWx3 picture: each person's body,
    hands and face on black, uint8 HxWx3."""
    height, width = image.shape[:2]
    return draw_poses(detect_wholebody(image, device=device), height, width)


def dw_openpose_with_json(image: np.ndarray, resolution: int, *,
                          device: Device | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The map of a uint8 HxWx3 picture at the processor resolution (as
    `preprocess("dw_openpose_full", image, resolution=...)`) and its people as the
    extension's JSON: keypoints in pixels of the scaled and padded picture (DWPose's are not
    fractions there), faces with the eyes as their last two points."""
    padded, remove_pad = resize_with_pad(image, resolution)
    poses = detect_wholebody(padded, pixels=True, device=device)
    height, width = padded.shape[:2]
    scale = (float(width), float(height))
    def fraction(part: Any) -> Any:
        return None if part is None else [
            None if p is None else (p[0] / scale[0], p[1] / scale[1]) for p in part]

    fractions = [Pose(*(fraction(part) for part in pose)) for pose in poses]
    return remove_pad(draw_poses(fractions, height, width)), pose_json(
        [pose.body for pose in poses], height, width,
        hands=[(pose.left_hand, pose.right_hand) for pose in poses],
        faces=[pose.face for pose in poses])
