"""`openpose`: the people of a picture found by CMU's body pose network (body_pose_model.pth
in the annotator folder's `openpose/`), drawn as the ControlNet extension's openpose map
(coloured limbs and joints on black), and their keypoints as its JSON.

As controlnet_aux's OpenposeDetector: the picture (BGR) scaled to 184 rows (area shrinking,
Lanczos enlarging), padded right and down to a multiple of 8 with 128, through the network as
BGR / 256 - 0.5; the heatmaps and part affinity fields scaled up 8 times, cut, scaled to the
picture (diffusion.preprocessors.pose_resize); the people found in numpy
(diffusion.preprocessors.pose_body); keypoints divided by the picture's width and height.

    people = detect_people(picture)          # [[18 (x, y) or None], ...], 0..1
    detected = openpose(picture)             # uint8 HxWx3
    poses = pose_json(people, height, width) # {"people": [{"pose_keypoints_2d": ...}], ...}
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import asarray

from ..models.annotators.openpose import BodyPoseNetwork
from .annotators import annotator_model
from .pose_body import find_people
from .pose_draw import draw_body
from .pose_resize import smart_resize, smart_resize_k
from .resize import resize_with_pad

__all__ = ["POSE_MODULES", "Keypoints", "body_maps", "detect_people", "openpose",
           "openpose_with_json", "pose_json"]

Keypoints = list[tuple[float, float] | None]
POSE_MODULES = ("openpose",)  # those /controlnet/detect also answers with their JSON
_BOX = 368
_STRIDE = 8
_PAD_VALUE = 128


def body_maps(bgr: np.ndarray, *, device: Device | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """The body network's heatmaps (HxWx19) and part affinity fields (HxWx38) of a uint8
    BGR picture, at its size (float64). controlnet_aux: the network part of `Body.__call__`."""
    model = annotator_model("openpose", "openpose", "body_pose_model.pth",
                            BodyPoseNetwork.from_state_dict, device)
    height, width = bgr.shape[:2]
    scale = 0.5 * _BOX / height
    scaled = smart_resize_k(bgr, fx=scale, fy=scale)
    pad_down, pad_right = (-scaled.shape[0] % _STRIDE, -scaled.shape[1] % _STRIDE)
    padded = np.pad(scaled, ((0, pad_down), (0, pad_right), (0, 0)),
                    constant_values=_PAD_VALUE)
    planes = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], np.float32) / 256 - 0.5
    pafs, heatmaps = model(asarray(planes, device=model.device))
    maps = []
    for out in (heatmaps, pafs):
        x = smart_resize_k(out.numpy()[0].transpose(1, 2, 0), fx=_STRIDE, fy=_STRIDE)
        x = x[:padded.shape[0] - pad_down, :padded.shape[1] - pad_right]
        maps.append(smart_resize(x, (height, width)).astype(np.float64))
    return maps[0], maps[1]


def detect_people(image: np.ndarray, *, device: Device | None = None) -> list[Keypoints]:
    """Each person's 18 body keypoints (nose, neck, right shoulder, elbow, wrist, left
    shoulder, elbow, wrist, right hip, knee, ankle, left hip, knee, ankle, right eye, left
    eye, right ear, left ear) of a uint8 HxWx3 RGB picture: (x / width, y / height), None
    where not found. controlnet_aux: `OpenposeDetector.detect_poses`."""
    height, width = image.shape[:2]
    heatmaps, pafs = body_maps(np.ascontiguousarray(image[:, :, ::-1]), device=device)
    candidates, people = find_people(heatmaps, pafs)
    return [[None if index < 0 else (candidates[index][0] / float(width),
                                     candidates[index][1] / float(height))
             for index in person[:18].astype(int)] for person in people]


def _drawn(people: list[Keypoints], height: int, width: int) -> np.ndarray:
    canvas = np.zeros((height, width, 3), np.uint8)
    for person in people:
        draw_body(canvas, person)
    return canvas


def openpose(image: np.ndarray, *, device: Device | None = None) -> np.ndarray:
    """The extension's openpose map: each person's limbs and joints on black, uint8 HxWx3."""
    return _drawn(detect_people(image, device=device), *image.shape[:2])


def openpose_with_json(image: np.ndarray, resolution: int, *, device: Device | None = None
                       ) -> tuple[np.ndarray, dict[str, Any]]:
    """The openpose map of a uint8 HxWx3 picture at the processor resolution (as
    `preprocess("openpose", image, resolution=...)`) and its people as the extension's JSON,
    whose canvas is the scaled and padded picture the people were found in (as the
    extension's `json_pose_callback` reports them)."""
    padded, remove_pad = resize_with_pad(image, resolution)
    people = detect_people(padded, device=device)
    return remove_pad(_drawn(people, *padded.shape[:2])), pose_json(people, *padded.shape[:2])


def pose_json(people: list[Keypoints], height: int, width: int, *,
              hands: list[tuple[Keypoints | None, Keypoints | None]] | None = None,
              faces: list[Keypoints | None] | None = None) -> dict[str, Any]:
    """The people as the extension's `encode_poses_as_dict` writes them (openpose's JSON:
    x, y, confidence per keypoint, 0, 0, 0 where missing); each person's (left, right) hands
    and face keypoints where given, null where not."""
    def flat(keypoints: Keypoints | None) -> list[float] | None:
        if not keypoints:
            return None
        return [value for point in keypoints for value in (
            (float(point[0]), float(point[1]), 1.0) if point is not None else (0.0, 0.0, 0.0))]

    no_hands: list[tuple[Keypoints | None, Keypoints | None]] = [(None, None)] * len(people)
    return {"people": [{"pose_keypoints_2d": flat(person), "face_keypoints_2d": flat(face),
                        "hand_left_keypoints_2d": flat(left),
                        "hand_right_keypoints_2d": flat(right)}
                       for person, (left, right), face in zip(
                           people, hands or no_hands, faces or [None] * len(people))],
            "canvas_height": height, "canvas_width": width}
