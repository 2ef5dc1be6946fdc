"""The openpose annotator's body network (CMU's convolutional pose machine, as lllyasviel's
body_pose_model.pth holds it) on gpustd.

    body = BodyPoseNetwork.from_state_dict(tensors, device=device)
    pafs, heatmaps = body(x)          # [1, 3, H, W] (BGR / 256 - 0.5) -> [1, 38 | 19, H/8, W/8]

A VGG front (3x3 convs with ReLU, three 2x2 max pools) gives the features; stage 1 reads
them, and each of stages 2..6 reads the previous stage's outputs beside the features (7x7
convs). Each stage has two branches: L1, the 38 part affinity fields (x and y of 19 limbs),
and L2, the 19 part heatmaps (18 joints and the background). The last conv of each stage has
no ReLU. Keys are the layers' names (`conv1_1.weight`, `Mconv7_stage6_L2.bias`, ...), as the
file holds them. torch: controlnet_aux.open_pose.model.bodypose_model.

    hand = HandPoseNetwork.from_state_dict(tensors)   # hand_pose_model.pth
    heatmaps = hand(x)                                 # [1, 3, H, W] -> [1, 22, H/8, W/8]
    face = FaceNetwork.from_state_dict(tensors)       # facenet.pth: [1, 71, H/8, W/8]

The hand and face networks share one machine: the VGG front to conv5_3_CPM, two 1x1 convs,
then five 7x7 stages each reading the previous heatmaps beside the features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import gpustd
from gpucore import Device, default_device
from gpustd import Tensor
from gpustd.nn import concat, conv2d, max_pool2d

__all__ = ["BodyPoseNetwork", "FaceNetwork", "HandPoseNetwork"]

_POOL = "pool"
_VGG = ("conv1_1", "conv1_2", _POOL, "conv2_1", "conv2_2", _POOL, "conv3_1", "conv3_2",
        "conv3_3", "conv3_4", _POOL, "conv4_1", "conv4_2")
_BODY_FRONT = (*_VGG, "conv4_3_CPM", "conv4_4_CPM")
_HAND_FRONT = (*_VGG, "conv4_3", "conv4_4", "conv5_1", "conv5_2", "conv5_3_CPM")
_HAND_STAGE1 = ("conv6_1_CPM", "conv6_2_CPM")


def _body_stage(stage: int, branch: int) -> tuple[str, ...]:
    if stage == 1:
        return tuple(f"conv5_{i}_CPM_L{branch}" for i in range(1, 6))
    return tuple(f"Mconv{i}_stage{stage}_L{branch}" for i in range(1, 8))


def _hand_stage(stage: int) -> tuple[str, ...]:
    return tuple(f"Mconv{i}_stage{stage}" for i in range(1, 8))


class _PoseMachine:
    """Weights by layer name, and a chain of layers run in order."""

    def __init__(self, weights: Mapping[str, Tensor]) -> None:
        self.weights = dict(weights)

    @classmethod
    def _build(cls, state: Mapping[str, Any], layers: Sequence[str], what: str, *,
               dtype: Any, device: Device | None) -> Any:
        device = device or default_device()
        names = [f"{layer}.{kind}" for layer in layers if layer != _POOL
                 for kind in ("weight", "bias")]
        missing = [name for name in names if name not in state]
        if missing:
            raise ValueError(f"no tensor {missing[0]}: not an openpose {what} network")
        return cls({name: Tensor.from_numpy(np.asarray(state[name], np.float32), dtype=dtype,
                                            device=device) for name in names})

    @property
    def device(self) -> Device:
        return self.weights["conv1_1.weight"].device

    def _chain(self, h: Tensor, layers: Sequence[str], *, last_relu: bool) -> Tensor:
        """The layers in order: 2x2 max pools, and convs ("same" padding) each with a ReLU
        after it (the last one too with last_relu)."""
        for i, layer in enumerate(layers):
            if layer == _POOL:
                h = max_pool2d(h, 2)
                continue
            weight = self.weights[f"{layer}.weight"]
            h = conv2d(h, weight, self.weights[f"{layer}.bias"], padding=weight.shape[2] // 2)
            if last_relu or i < len(layers) - 1:
                h = gpustd.maximum(h, 0.0)
        return h


class BodyPoseNetwork(_PoseMachine):
    """bodypose_model: the picture's part affinity fields and part heatmaps."""

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, dtype: Any = np.float32,
                        device: Device | None = None) -> BodyPoseNetwork:
        """Build from body_pose_model.pth's arrays. ValueError naming a missing tensor."""
        layers = [*_BODY_FRONT, *(name for stage in range(1, 7) for branch in (1, 2)
                                  for name in _body_stage(stage, branch))]
        return cls._build(state, layers, "body (body_pose_model.pth)", dtype=dtype,
                          device=device)

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """[N, 3, H, W] -> (pafs [N, 38, H/8, W/8], heatmaps [N, 19, H/8, W/8]), sizes floored
        by each pool. torch: `bodypose_model.forward`."""
        features = self._chain(x, _BODY_FRONT, last_relu=True)
        h = features
        for stage in range(1, 7):
            # the original lists Mconv7_stage6_L1 twice among the layers without a ReLU, and
            # so the last heatmaps (Mconv7_stage6_L2) have one
            pafs, heatmaps = (self._chain(h, _body_stage(stage, branch),
                                          last_relu=(stage, branch) == (6, 2))
                              for branch in (1, 2))
            h = concat([pafs, heatmaps, features], axis=1)
        return pafs, heatmaps



class HandPoseNetwork(_PoseMachine):
    """handpose_model: a square picture's 22 hand heatmaps (21 joints and the background).
    Stage 1 is two 1x1 convs on the features; stages 2..6 read the previous heatmaps beside
    them. FaceNetwork is the same machine with 71 maps."""

    _WHAT = "hand (hand_pose_model.pth)"

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, dtype: Any = np.float32,
                        device: Device | None = None) -> Any:
        """Build from the file's arrays. ValueError naming a missing tensor."""
        layers = [*_HAND_FRONT, *_HAND_STAGE1,
                  *(name for stage in range(2, 7) for name in _hand_stage(stage))]
        return cls._build(state, layers, cls._WHAT, dtype=dtype, device=device)

    def __call__(self, x: Tensor) -> Tensor:
        """[N, 3, H, W] -> the last stage's heatmaps [N, 22 | 71, H/8, W/8]. torch:
        `handpose_model.forward`, `FaceNet.forward(x)[-1]`."""
        features = self._chain(x, _HAND_FRONT, last_relu=True)
        h = self._chain(features, _HAND_STAGE1, last_relu=False)
        for stage in range(2, 7):
            h = self._chain(concat([h, features], axis=1), _hand_stage(stage), last_relu=False)
        return h


class FaceNetwork(HandPoseNetwork):
    """FaceNet (facenet.pth): a face's 71 heatmaps (70 landmarks and the background), the
    hand's machine and layer names."""

    _WHAT = "face (facenet.pth)"
