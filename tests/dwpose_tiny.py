"""Tiny random ONNX graphs with the structure of DWPose's two files, written with onnx.helper:

- `detector_graph`: YOLOX's (Focus as four strided Slices and a Concat, Conv + SiLU as
  Sigmoid and Mul, a CSP shortcut Add, SPP's three stride-1 MaxPools, the PAN's nearest
  Resize, per-level heads with Sigmoid objectness and classes, Reshape, Concat and Transpose
  to [1, cells, 5 + classes]) at a small square input;
- `pose_graph`: RTMPose's (CSPNeXt's Conv + SiLU, channel attention by GlobalAveragePool,
  Conv, HardSigmoid and Mul, SPPF's MaxPool; the SimCC head's Conv (3x3 here, 7x7 there: one
  conv kernel fewer for the software adapters to compile), Reshape, ScaleNorm as
  ReduceL2, Mul, Clip and Div, MatMul, the gated attention unit's Split, Unsqueeze, Squeeze,
  Transpose, MatMul, Relu and Pow, Softmax-free; two MatMuls to simcc_x and simcc_y) with 133
  keypoints at a small 4:3 input.

Weights are seeded and scaled so that the outputs vary with the input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

KEYPOINTS = 133


class _Graph:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def weight(self, array: np.ndarray, stem: str = "w") -> str:
        name = self.name(stem)
        self.weights.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: int = 1, **attributes: object
             ) -> list[str]:
        names = [self.name(op.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, **attributes))
        return names

    def one(self, op: str, inputs: list[str], **attributes: object) -> str:
        return self.node(op, inputs, **attributes)[0]

    def conv(self, x: str, c_in: int, c_out: int, k: int = 3, stride: int = 1,
             silu: bool = True, gain: float = 1.6) -> str:
        w = self.rng.standard_normal((c_out, c_in, k, k)) * gain / np.sqrt(c_in * k * k)
        b = self.rng.standard_normal(c_out) * 0.1
        y = self.one("Conv", [x, self.weight(w.astype(np.float32)),
                              self.weight(b.astype(np.float32), "b")],
                     kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)
        return self.one("Mul", [y, self.one("Sigmoid", [y])]) if silu else y

    def const(self, values: list[int]) -> str:
        return self.weight(np.array(values, np.int64), "c")

    def model(self, inputs: dict[str, list[int]], outputs: list[str]) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "tiny",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None]) for n in outputs],
            self.weights)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def detector_graph(size: int = 64, classes: int = 3, seed: int = 0,
                   person_bias: float = -0.5, objectness_bias: float = -3.0) -> onnx.ModelProto:
    """YOLOX's structure at size x size (a multiple of 32); output [1, cells, 5 + classes].
    The biases set how many people it finds (3 in test_dwpose's picture)."""
    g = _Graph(seed)
    x = "images"
    quarters = [g.one("Slice", [x, g.const([dy, dx]), g.const([size, size]), g.const([2, 3]),
                                g.const([2, 2])]) for dx, dy in ((0, 0), (0, 1), (1, 0), (1, 1))]
    x = g.conv(g.one("Concat", quarters, axis=1), 12, 8, gain=1.6 / 128)    # /2
    x = g.conv(x, 8, 8, stride=2)                                          # /4
    p3 = g.conv(x, 8, 8, stride=2)                                         # /8
    p3 = g.one("Add", [p3, g.conv(g.conv(p3, 8, 8, k=1), 8, 8)])           # CSP shortcut
    p4 = g.conv(p3, 8, 12, stride=2)                                       # /16
    p5 = g.conv(p4, 12, 16, stride=2)                                      # /32
    pools = [g.one("MaxPool", [p5], kernel_shape=[k, k], strides=[1, 1], pads=[k // 2] * 4)
             for k in (5, 9, 13)]
    p5 = g.conv(g.one("Concat", [p5, *pools], axis=1), 64, 16, k=1)
    scales = g.weight(np.array([1, 1, 2, 2], np.float32), "scales")
    up = g.one("Resize", [g.conv(p5, 16, 12, k=1), "", scales], mode="nearest",
               coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    p4 = g.conv(g.one("Concat", [up, p4], axis=1), 24, 12)
    levels = []
    for feature, channels in ((p3, 8), (p4, 12), (p5, 16)):
        stem = g.conv(feature, channels, 8, k=1)
        box = g.conv(g.conv(stem, 8, 8), 8, 4, k=1, silu=False, gain=0.8)
        objectness = g.one("Add", [g.conv(g.conv(stem, 8, 8), 8, 1, k=1, silu=False),
                                   g.weight(np.float32(objectness_bias), "o")])
        kinds = g.conv(g.conv(stem, 8, 8), 8, classes, k=1, silu=False)
        kinds = g.one("Add", [kinds, g.weight(np.array(
            [person_bias] + [0.0] * (classes - 1), np.float32).reshape(1, classes, 1, 1))])
        level = g.one("Concat", [box, g.one("Sigmoid", [objectness]),
                                 g.one("Sigmoid", [kinds])], axis=1)
        levels.append(g.one("Reshape", [level, g.const([1, 5 + classes, -1])]))
    out = g.one("Transpose", [g.one("Concat", levels, axis=2)], perm=[0, 2, 1])
    g.nodes.append(helper.make_node("Identity", [out], ["output"]))
    return g.model({"images": [1, 3, size, size]}, ["output"])


def _scale_norm(g: _Graph, x: str, dim: int) -> str:
    norm = g.one("ReduceL2", [x], axes=[-1], keepdims=1)
    norm = g.one("Clip", [g.one("Mul", [norm, g.weight(np.float32(dim ** -0.5), "s")]),
                          g.weight(np.float32(1e-5), "eps"), ""])
    scaled = g.one("Div", [x, norm])
    return g.one("Mul", [scaled, g.weight(np.float32(1.0 + g.rng.random()), "g")])


def _linear(g: _Graph, x: str, c_in: int, c_out: int, gain: float = 1.0,
            bias: bool = True) -> str:
    w = (g.rng.standard_normal((c_in, c_out)) * gain / np.sqrt(c_in)).astype(np.float32)
    y = g.one("MatMul", [x, g.weight(w)])
    if bias:
        y = g.one("Add", [y, g.weight((g.rng.standard_normal(c_out) * 0.1).astype(np.float32),
                                      "b")])
    return y


def pose_graph(height: int = 32, width: int = 24, seed: int = 1,
               batch: int | None = 1) -> onnx.ModelProto:
    """RTMPose's structure at height x width (multiples of 4); outputs simcc_x [n, 133,
    2 width] and simcc_y [n, 133, 2 height]."""
    g = _Graph(seed)
    x = g.conv("input", 3, 8, stride=2)                                     # /2
    x = g.conv(x, 8, 12, stride=2)                                         # /4
    pooled = g.one("GlobalAveragePool", [x])
    gate = g.one("HardSigmoid", [g.conv(pooled, 12, 12, k=1, silu=False)], alpha=1 / 6,
                 beta=0.5)
    x = g.one("Mul", [x, gate])                                            # channel attention
    pool = g.one("MaxPool", [x], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])
    x = g.conv(g.one("Concat", [x, pool], axis=1), 24, 12, k=1)            # SPPF
    x = g.conv(x, 12, KEYPOINTS, silu=False, gain=1.0)  # final_layer (7x7 in the real one)
    cells = (height // 4) * (width // 4)
    x = g.one("Reshape", [x, g.const([0, KEYPOINTS, -1])])
    x = _linear(g, _scale_norm(g, x, cells), cells, 16, bias=False)        # mlp
    shortcut = x
    uv = g.one("Mul", [*(lambda y: (y, g.one("Sigmoid", [y])))(
        _linear(g, _scale_norm(g, x, 16), 16, 2 * 32 + 8))])
    u, v, base = g.node("Split", [uv, g.const([32, 32, 8])], outputs=3, axis=2)
    base = g.one("Unsqueeze", [base, g.const([2])])
    gamma = (g.rng.standard_normal((2, 8)) * 0.1 + 0.3).astype(np.float32)
    qk = g.one("Add", [g.one("Mul", [base, g.weight(gamma)]),
                       g.weight((g.rng.standard_normal((2, 8)) * 0.1).astype(np.float32))])
    q, k = (g.one("Squeeze", [part, g.const([2])])
            for part in g.node("Split", [qk, g.const([1, 1])], outputs=2, axis=2))
    attention = g.one("MatMul", [q, g.one("Transpose", [k], perm=[0, 2, 1])])
    attention = g.one("Div", [attention, g.weight(np.float32(np.sqrt(8)), "s")])
    kernel = g.one("Pow", [g.one("Relu", [attention]), g.weight(np.float32(2.0), "p")])
    mixed = g.one("Mul", [u, g.one("MatMul", [kernel, v])])
    x = g.one("Add", [g.one("Mul", [shortcut, g.weight(np.ones(16, np.float32), "r")]),
                      _linear(g, mixed, 32, 16)])
    g.nodes.append(helper.make_node("Identity", [_linear(g, x, 16, 2 * width, gain=2.0)],
                                    ["simcc_x"]))
    g.nodes.append(helper.make_node("Identity", [_linear(g, x, 16, 2 * height, gain=2.0)],
                                    ["simcc_y"]))
    return g.model({"input": [batch if batch else "batch", 3, height, width]},
                   ["simcc_x", "simcc_y"])


def write_annotators(folder: Path, *, detector: onnx.ModelProto | None = None,
                     pose: onnx.ModelProto | None = None) -> Path:
    """The two graphs saved as the extension lays them out: folder/openpose/yolox_l.onnx and
    dw-ll_ucoco_384.onnx. Returns the openpose folder."""
    openpose = folder / "openpose"
    openpose.mkdir(parents=True, exist_ok=True)
    onnx.save(detector or detector_graph(), openpose / "yolox_l.onnx")
    onnx.save(pose or pose_graph(), openpose / "dw-ll_ucoco_384.onnx")
    return openpose
