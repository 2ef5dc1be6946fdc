"""RetinaFace on gpustd, the face detector facexlib (and so the WebUI's face restoration) uses:
a ResNet-50 or MobileNet-0.25 backbone, a three-level FPN, SSH context modules and per-anchor
heads for the face score, the box and five landmarks (eyes, nose, mouth corners).

    detector = RetinaFace.from_state_dict(tensors, device=device)  # detection_Resnet50_Final.pth
    faces = detector.detect(bgr)     # (H, W, 3) BGR -> (N, 15): box, score, 5 (x, y) landmarks

Keys as in facexlib's files (a `module.` prefix is dropped): `body.*` (torchvision's ResNet-50
names, or `body.stage{1,2,3}` for MobileNet), `fpn.*`, `ssh{1,2,3}.*`, `ClassHead/BboxHead/
LandmarkHead.{i}.conv1x1`. BatchNorms are folded into the convs as the file is read.
torch: `facexlib.detection.RetinaFace` (`detect_faces(image, conf_threshold, nms_threshold)`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

import gpustd
from gpucore import Device, default_device
from gpustd import Tensor
from gpustd.nn import concat, conv2d, pad

from .esrgan import leaky_relu

__all__ = ["RetinaFace", "nms", "prior_boxes"]

MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCE = (0.1, 0.2)
MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)


def prior_boxes(height: int, width: int) -> np.ndarray:
    """(P, 4) anchors (cx, cy, w, h) relative to the image, in facexlib's PriorBox order:
    per level, per cell row-major, per anchor size. float32."""
    anchors = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy, cx = np.meshgrid((np.arange(rows) + 0.5) * step / height,
                             (np.arange(cols) + 0.5) * step / width, indexing="ij")
        for size in sizes:
            level = np.stack([cx, cy, np.full_like(cx, size / width),
                              np.full_like(cx, size / height)], axis=-1)
            anchors.append(level)
    per_level = []
    for k in range(len(STEPS)):  # interleave each cell's two anchor sizes
        a, b = anchors[2 * k], anchors[2 * k + 1]
        per_level.append(np.stack([a, b], axis=2).reshape(-1, 4))
    return np.concatenate(per_level).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression, highest score first: a box goes when
    its IoU with a kept one exceeds `threshold`. torch: `torchvision.ops.nms`."""
    x1, y1, x2, y2 = boxes.T.astype(np.float64)
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        order = rest[inter / (areas[i] + areas[rest] - inter) <= threshold]
    return keep


def _fold(state: Mapping[str, Any], conv: str, bn: str) -> tuple[np.ndarray, np.ndarray]:
    """conv (no bias) then BatchNorm (eval, eps 1e-5) as one conv's weight and bias."""
    weight = np.asarray(state[f"{conv}.weight"], np.float64)
    scale = np.asarray(state[f"{bn}.weight"], np.float64) / np.sqrt(
        np.asarray(state[f"{bn}.running_var"], np.float64) + 1e-5)
    bias = np.asarray(state[f"{bn}.bias"], np.float64) - \
        np.asarray(state[f"{bn}.running_mean"], np.float64) * scale
    return weight * scale[:, None, None, None], bias


class RetinaFace:
    """RetinaFace with weights on `device` (the module docstring says which keys)."""

    def __init__(self, weights: Mapping[str, Tensor], *, backbone: str, leaky: float) -> None:
        self.weights = dict(weights)
        self.backbone, self.leaky = backbone, leaky

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, device: Device | None = None
                        ) -> RetinaFace:
        """Build from a state dict of numpy arrays (float32 throughout: the boxes are read
        to the pixel). Raises ValueError when it is no RetinaFace."""
        device = device or default_device()
        state = {key.removeprefix("module."): value for key, value in state.items()}
        if "ClassHead.0.conv1x1.weight" not in state:
            raise ValueError("not a RetinaFace state dict (no 'ClassHead.0.conv1x1.weight')")
        backbone = "resnet50" if "body.conv1.weight" in state else "mobilenet0.25"
        out_channels = int(np.shape(state["fpn.output1.0.weight"])[0])
        weights: dict[str, Tensor] = {}

        def put(name: str, weight: np.ndarray, bias: np.ndarray) -> None:
            for kind, value in (("weight", weight), ("bias", bias)):
                weights[f"{name}.{kind}"] = Tensor.from_numpy(
                    np.asarray(value, np.float32), device=device)

        convs = {key.rsplit(".", 1)[0] for key, value in state.items()
                 if key.endswith(".weight") and np.ndim(value) == 4}
        for conv in sorted(convs):
            if conv.endswith("conv1x1"):
                put(conv, state[f"{conv}.weight"], state[f"{conv}.bias"])
                continue
            # torchvision's convN/bnN and downsample.0/.1; facexlib's Sequential's k/k+1
            head, last = conv.rsplit(".", 1)
            bn = (f"{head}.bn{last[4:]}" if last.startswith("conv") and f"{head}.bn{last[4:]}"
                  ".weight" in state else f"{head}.{int(last) + 1}" if last.isdigit() else
                  "body.bn1")
            put(conv, *_fold(state, conv, bn))
        return cls(weights, backbone=backbone, leaky=0.1 if out_channels <= 64 else 0.0)

    def _conv(self, name: str, x: Tensor, *, stride: int = 1, relu: float | None = None,
              groups: int = 1) -> Tensor:
        weight = self.weights[f"{name}.weight"]
        out = conv2d(x, weight, self.weights[f"{name}.bias"], stride=stride,
                     padding=weight.shape[2] // 2, groups=groups)
        if relu is None:
            return out
        return gpustd.maximum(out, 0.0) if relu == 0 else leaky_relu(out, relu)

    def _resnet(self, x: Tensor) -> list[Tensor]:
        x = self._conv("body.conv1", x, stride=2, relu=0)
        # 3x3 max pool, stride 2, padding 1: after the ReLU a zero pad never wins
        x = pad(x, (1, 1, 1, 1))
        h, w = (x.shape[2] - 3) // 2 + 1, (x.shape[3] - 3) // 2 + 1
        pooled = x[:, :, 0:2 * h - 1:2, 0:2 * w - 1:2]
        for dy in range(3):
            for dx in range(3):
                if dy or dx:
                    part = x[:, :, dy:dy + 2 * h - 1:2, dx:dx + 2 * w - 1:2]
                    pooled = gpustd.maximum(pooled, part)
        x = pooled
        outputs = []
        for layer, blocks in ((1, 3), (2, 4), (3, 6), (4, 3)):
            for j in range(blocks):
                name = f"body.layer{layer}.{j}"
                stride = 2 if j == 0 and layer > 1 else 1
                out = self._conv(f"{name}.conv1", x, relu=0)
                out = self._conv(f"{name}.conv2", out, stride=stride, relu=0)
                skip = self._conv(f"{name}.downsample.0", x, stride=stride) \
                    if j == 0 else x
                x = gpustd.maximum(self._conv(f"{name}.conv3", out) + skip, 0.0)
            if layer > 1:
                outputs.append(x)
        return outputs

    def _mobilenet(self, x: Tensor) -> list[Tensor]:
        outputs = []
        for stage, blocks in ((1, 6), (2, 6), (3, 2)):
            for j in range(blocks):
                name = f"body.stage{stage}.{j}"
                if stage == 1 and j == 0:
                    x = self._conv(f"{name}.0", x, stride=2, relu=0.1)
                    continue
                channels = self.weights[f"{name}.0.weight"].shape[0]
                stride = 2 if j == 0 or (stage == 1 and j in (2, 4)) else 1
                x = self._conv(f"{name}.0", x, stride=stride, relu=0.1, groups=channels)
                x = self._conv(f"{name}.3", x, relu=0.1)
            outputs.append(x)
        return outputs

    def _ssh(self, name: str, x: Tensor) -> Tensor:
        c3 = self._conv(f"{name}.conv3X3.0", x)
        c5_1 = self._conv(f"{name}.conv5X5_1.0", x, relu=self.leaky)
        c5 = self._conv(f"{name}.conv5X5_2.0", c5_1)
        c7 = self._conv(f"{name}.conv7x7_3.0",
                        self._conv(f"{name}.conv7X7_2.0", c5_1, relu=self.leaky))
        return gpustd.maximum(concat([c3, c5, c7]), 0.0)

    def forward(self, x: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """[1, 3, H, W] BGR minus the mean -> (loc [P, 4], face score [P], landmarks
        [P, 10]), the anchors in `prior_boxes` order. torch: `RetinaFace.forward`."""
        levels = self._resnet(x) if self.backbone == "resnet50" else self._mobilenet(x)
        fpn = [self._conv(f"fpn.output{i + 1}.0", level, relu=self.leaky)
               for i, level in enumerate(levels)]
        for i in (1, 0):  # top-down: nearest-upsampled coarser level added, then a merge conv
            coarse = fpn[i + 1]
            rows = np.floor(np.arange(fpn[i].shape[2]) * coarse.shape[2] / fpn[i].shape[2])
            cols = np.floor(np.arange(fpn[i].shape[3]) * coarse.shape[3] / fpn[i].shape[3])
            up = gpustd.take(gpustd.take(coarse, rows.astype(np.int32), axis=2),
                             cols.astype(np.int32), axis=3)
            fpn[i] = self._conv(f"fpn.merge{i + 1}.0", fpn[i] + up, relu=self.leaky)
        features = [self._ssh(f"ssh{i + 1}", f) for i, f in enumerate(fpn)]
        heads = []
        for head, width in (("BboxHead", 4), ("ClassHead", 2), ("LandmarkHead", 10)):
            parts = [gpustd.permute(self._conv(f"{head}.{i}.conv1x1", f), (0, 2, 3, 1))
                     .numpy().reshape(-1, width) for i, f in enumerate(features)]
            heads.append(np.concatenate(parts))
        loc, logits, landmarks = heads
        scores = 1.0 / (1.0 + np.exp(logits[:, 0] - logits[:, 1]))  # softmax's second class
        return loc, scores.astype(np.float32), landmarks

    def detect(self, bgr: np.ndarray, *, threshold: float = 0.8,
               nms_threshold: float = 0.4) -> np.ndarray:
        """Faces in a (H, W, 3) BGR picture (uint8 or float, 0..255): (N, 15) float32 rows
        of x1, y1, x2, y2, score, then the five landmarks' x, y; best first, overlaps
        (IoU > nms_threshold) removed. torch: `RetinaFace.detect_faces(bgr, threshold,
        nms_threshold)` (at the picture's own size)."""
        height, width = bgr.shape[:2]
        x = (np.asarray(bgr, np.float32) - MEAN_BGR).transpose(2, 0, 1)[None]
        loc, scores, landmarks = self.forward(
            Tensor.from_numpy(np.ascontiguousarray(x), device=self.weights[
                "ClassHead.0.conv1x1.weight"].device))
        priors = prior_boxes(height, width)
        centers, sizes = priors[:, :2], priors[:, 2:]
        # 1. decode: offsets in anchor units (scaled by the variances), sizes as log ratios
        middle = centers + loc[:, :2] * VARIANCE[0] * sizes
        extent = sizes * np.exp(loc[:, 2:] * VARIANCE[1])
        boxes = np.concatenate([middle - extent / 2, middle + extent / 2], axis=1)
        points = np.concatenate([centers + landmarks[:, 2 * j:2 * j + 2] * VARIANCE[0] * sizes
                                 for j in range(5)], axis=1)
        scale = np.array([width, height], np.float32)
        boxes, points = boxes * np.tile(scale, 2), points * np.tile(scale, 5)
        # 2. confident ones, best first, overlaps suppressed
        chosen = np.flatnonzero(scores > threshold)
        chosen = chosen[np.argsort(-scores[chosen], kind="stable")]
        rows = np.concatenate([boxes[chosen], scores[chosen, None], points[chosen]], axis=1)
        keep = nms(rows[:, :4], rows[:, 4], nms_threshold)
        return rows[keep].astype(np.float32)
