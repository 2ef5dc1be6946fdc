"""`openpose` and its hand and face modules: the people of a picture found by CMU's body pose
network (body_pose_model.pth in the annotator folder's `openpose/`), with their hands
(hand_pose_model.pth) and faces (facenet.pth) where the module asks for them, drawn as the
ControlNet extension's openpose maps (coloured limbs and joints on black, rainbow hands, white
face dots), and their keypoints as its JSON.

| module | draws |
|---|---|
| `openpose` | bodies |
| `openpose_hand` | bodies and hands |
| `openpose_face` | bodies and faces |
| `openpose_faceonly` | faces (the bodies found, not drawn) |
| `openpose_full` | bodies, hands and faces |

As controlnet_aux's OpenposeDetector: the picture (BGR) scaled to 184 rows (area shrinking,
Lanczos enlarging), padded right and down to a multiple of 8 with 128, through the network as
BGR / 256 - 0.5; the heatmaps and part affinity fields scaled up 8 times, cut, scaled to the
picture (diffusion.preprocessors.pose_resize); the people found in numpy
(diffusion.preprocessors.pose_body); each person's hands and face from boxes around their
body keypoints (pose_hand, pose_face); keypoints divided by the picture's width and height.

    poses = detect_poses(picture, hands=True, face=True)   # [Pose(body, left, right, face)]
    detected = openpose_map(picture, body=True, hands=True, face=True)   # uint8 HxWx3
    poses_json = pose_json(people, height, width)  # {"people": [{"pose_keypoints_2d": ...}]}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from gpucore import Device, default_device
from gpustd import asarray

from ..models.annotators.openpose import BodyPoseNetwork, FaceNetwork, HandPoseNetwork
from .annotators import annotator_model
from .pose_batch import Network
from .pose_body import find_people
from .pose_draw import draw_body, draw_face, draw_hand
from .pose_face import detect_faces
from .pose_hand import detect_people_hands
from .pose_resize import smart_resize, smart_resize_k
from .resize import resize_with_pad

__all__ = ["POSE_MODULES", "Keypoints", "Pose", "body_maps", "detect_people", "detect_poses",
           "draw_poses", "openpose", "openpose_map", "openpose_with_json", "pose_json"]

Keypoints = list[tuple[float, float] | None]
Joints = Sequence[tuple[float, float] | None]  # a hand's or face's points (or a body's)
# the modules /controlnet/detect also answers with their JSON: (body, hands, face) drawn
POSE_MODULES = {"openpose": (True, False, False), "openpose_hand": (True, True, False),
                "openpose_face": (True, False, True), "openpose_faceonly": (False, False, True),
                "openpose_full": (True, True, True)}
_BOX = 368
_STRIDE = 8
_PAD_VALUE = 128


class Pose(NamedTuple):
    """One person: 18 body keypoints, the (left, right) hands' 21 joints and the face's
    landmarks, as fractions of the picture's width and height (None: not looked for or
    not found)."""

    body: Keypoints
    left_hand: Joints | None
    right_hand: Joints | None
    face: Joints | None


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


def _people_in_pixels(bgr: np.ndarray, device: Device | None) -> list[Keypoints]:
    candidates, people = find_people(*body_maps(bgr, device=device))
    return [[None if index < 0 else (float(candidates[index][0]), float(candidates[index][1]))
             for index in person[:18].astype(int)] for person in people]


def detect_people(image: np.ndarray, *, device: Device | None = None) -> list[Keypoints]:
    """Each person's 18 body keypoints (nose, neck, right shoulder, elbow, wrist, left
    shoulder, elbow, wrist, right hip, knee, ankle, left hip, knee, ankle, right eye, left
    eye, right ear, left ear) of a uint8 HxWx3 RGB picture: (x / width, y / height), None
    where not found. controlnet_aux: `OpenposeDetector.detect_poses`."""
    height, width = image.shape[:2]
    return [_fractions(person, height, width)
            for person in _people_in_pixels(np.ascontiguousarray(image[:, :, ::-1]), device)]


def _fractions(person: Keypoints, height: int, width: int) -> Keypoints:
    return [None if point is None else (point[0] / float(width), point[1] / float(height))
            for point in person]


def _network(module: str, filename: str, build: Any, device: Device | None) -> Network:
    model = annotator_model(module, "openpose", filename, build, device)
    return lambda planes: model(asarray(planes, device=model.device)).numpy()


def detect_poses(image: np.ndarray, *, hands: bool = False, face: bool = False,
                 device: Device | None = None) -> list[Pose]:
    """Each person of a uint8 HxWx3 RGB picture: body keypoints, and with `hands` / `face`
    their hands' joints and face landmarks (hand_pose_model.pth, facenet.pth).
    controlnet_aux: `OpenposeDetector.detect_poses(image, include_hand, include_face)`."""
    if not hands and not face:
        return [Pose(person, None, None, None) for person in detect_people(image, device=device)]
    height, width = image.shape[:2]
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    people = _people_in_pixels(bgr, device)
    hand_network = face_network = None
    if hands and people:
        hand_network = _network("openpose_hand", "hand_pose_model.pth",
                                HandPoseNetwork.from_state_dict, device)
    if face and people:
        face_network = _network("openpose_face", "facenet.pth", FaceNetwork.from_state_dict,
                                device)
    max_pixels = _batch_pixels(device)
    hands_found = (detect_people_hands(bgr, people, hand_network, max_pixels=max_pixels)
                   if hand_network else [(None, None)] * len(people))
    faces = (detect_faces(bgr, people, face_network, max_pixels=max_pixels) if face_network
             else [None] * len(people))
    return [Pose(_fractions(person, height, width), left, right, found)
            for person, (left, right), found in zip(people, hands_found, faces)]


def _batch_pixels(device: Device | None) -> int:
    """How many input pixels one hand or face network call takes (crops of one size
    stacked): its widest activation (64 float32 channels at the input's size) within one
    binding, and 1 GiB."""
    limit = (device or default_device()).limits["max-storage-buffer-binding-size"]
    return min(limit, 1 << 30) // (64 * 4)


def draw_poses(poses: list[Pose], height: int, width: int, body: bool = True) -> np.ndarray:
    """The people on a black height x width canvas, one after another as the extension's
    draw_poses: body (with `body`), hands, face. uint8 HxWx3."""
    canvas = np.zeros((height, width, 3), np.uint8)
    for pose in poses:
        if body:
            draw_body(canvas, pose.body)
        draw_hand(canvas, pose.left_hand)
        draw_hand(canvas, pose.right_hand)
        draw_face(canvas, pose.face)
    return canvas


def openpose_map(image: np.ndarray, *, body: bool = True, hands: bool = False,
                 face: bool = False, device: Device | None = None) -> np.ndarray:
    """The extension's openpose map of a uint8 HxWx3 picture: each person's limbs and joints
    (with `body`), hands and face on black, uint8 HxWx3. controlnet_aux:
    `OpenposeDetector(image, include_body=..., include_hand=..., include_face=...)` at the
    picture's size."""
    poses = detect_poses(image, hands=hands, face=face, device=device)
    height, width = image.shape[:2]
    return draw_poses(poses, height, width, body=body)


def openpose(image: np.ndarray, *, device: Device | None = None) -> np.ndarray:
    """The extension's openpose map: each person's limbs and joints on black, uint8 HxWx3."""
    return openpose_map(image, device=device)


def openpose_with_json(image: np.ndarray, resolution: int, *, module: str = "openpose",
                       device: Device | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The map of one of POSE_MODULES of a uint8 HxWx3 picture at the processor resolution
    (as `preprocess(module, image, resolution=...)`) and its people as the extension's JSON,
    whose canvas is the scaled and padded picture the people were found in (as the
    extension's `json_pose_callback` reports them)."""
    body, hands, face = POSE_MODULES[module]
    padded, remove_pad = resize_with_pad(image, resolution)
    poses = detect_poses(padded, hands=hands, face=face, device=device)
    height, width = padded.shape[:2]
    return remove_pad(draw_poses(poses, height, width, body=body)), pose_json(
        [pose.body for pose in poses], *padded.shape[:2],
        hands=[(pose.left_hand, pose.right_hand) for pose in poses] if hands else None,
        faces=[pose.face for pose in poses] if face else None)


def pose_json(people: list[Keypoints], height: int, width: int, *,
              hands: list[tuple[Joints | None, Joints | None]] | None = None,
              faces: list[Joints | None] | None = None) -> dict[str, Any]:
    """The people as the extension's `encode_poses_as_dict` writes them (openpose's JSON:
    x, y, confidence per keypoint, 0, 0, 0 where missing); each person's (left, right) hands
    and face keypoints where given, null where not."""
    def flat(keypoints: Joints | None) -> list[float] | None:
        if not keypoints:
            return None
        return [value for point in keypoints for value in (
            (float(point[0]), float(point[1]), 1.0) if point is not None else (0.0, 0.0, 0.0))]

    no_hands: list[tuple[Joints | None, Joints | None]] = [(None, None)] * len(people)
    return {"people": [{"pose_keypoints_2d": flat(person), "face_keypoints_2d": flat(face),
                        "hand_left_keypoints_2d": flat(left),
                        "hand_right_keypoints_2d": flat(right)}
                       for person, (left, right), face in zip(
                           people, hands or no_hands, faces or [None] * len(people))],
            "canvas_height": height, "canvas_width": width}
