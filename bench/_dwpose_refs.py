"""dw_openpose_full's rows of bench dit_controlnet: DWPose's two networks at their real sizes,
ours alone (no reference runs on torch's device: the extension runs the ONNX files with
OpenCV's DNN on the CPU, the tests with onnx's ReferenceEvaluator).

The graphs are written here with onnx.helper, random: YOLOX-L (depth 1, width 1: the Focus
slices, CSP stages of 3, 9, 9 and 3 bottlenecks from 64 to 1024 channels, SPP, the PAFPN,
the decoupled heads of 256 channels, 80 classes) at 640 x 640, and DWPose-l's RTMPose-l
(CSPNeXt-l: stem 32/32/64, stages of 3, 6, 6 and 3 CSPNeXt blocks with depthwise 5x5 convs
and channel attention, SPPF; the SimCC head: a 7x7 conv to 133 keypoints, ScaleNorm and
Linear to 256, one gated attention unit (e 512, s 128), Linears to 576 and 768 bins) at
384 x 288; batch norms folded into the convs, as exports write them. Timed: the detector's
whole step (letterbox, network, decoding; its weights find nobody, so no suppression work)
and the pose network's step on three fixed boxes (crops, network, SimCC decoding), i.e. the
cost of a picture with three people, whatever the picture's size (the detector's input is
640 x 640, each crop 384 x 288).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["detector_graph", "pose_graph", "rows"]


class _Graph:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[Any] = []
        self.weights: list[Any] = []
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def weight(self, array: np.ndarray, stem: str = "w") -> str:
        from onnx import numpy_helper

        name = self.name(stem)
        self.weights.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def one(self, op: str, inputs: list[str], outputs: int = 1, **attributes: Any) -> Any:
        from onnx import helper

        names = [self.name(op.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, **attributes))
        return names[0] if outputs == 1 else names

    def conv(self, x: str, c_in: int, c_out: int, k: int = 1, stride: int = 1,
             act: bool = True, groups: int = 1, bias: float = 0.0, gain: float = 1.2) -> str:
        fan_in = c_in // groups * k * k
        w = self.rng.standard_normal((c_out, c_in // groups, k, k), np.float32)
        b = self.rng.standard_normal(c_out, np.float32) * 0.1 + bias
        y = self.one("Conv", [x, self.weight(w * np.float32(gain / fan_in**0.5)),
                              self.weight(b.astype(np.float32), "b")],
                     kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4,
                     group=groups)
        return self.one("Mul", [y, self.one("Sigmoid", [y])]) if act else y

    def linear(self, x: str, c_in: int, c_out: int) -> str:
        w = self.rng.standard_normal((c_in, c_out), np.float32) / np.float32(c_in**0.5)
        return self.one("MatMul", [x, self.weight(w)])

    def const(self, values: list[int]) -> str:
        return self.weight(np.array(values, np.int64), "c")

    def model(self, inputs: dict[str, list[int]], outputs: dict[str, str]) -> Any:
        """The graph of `inputs` (name: shape) and `outputs` (name: the value it is)."""
        from onnx import TensorProto, helper

        for name, value in outputs.items():
            self.nodes.append(helper.make_node("Identity", [value], [name]))
        graph = helper.make_graph(
            self.nodes, "random",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
            self.weights)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return model


def _csp(g: _Graph, x: str, c_in: int, c_out: int, blocks: int, shortcut: bool) -> str:
    """YOLOX's CSPLayer (expansion 0.5, bottlenecks of expansion 1)."""
    hidden = c_out // 2
    main, side = g.conv(x, c_in, hidden), g.conv(x, c_in, hidden)
    for _ in range(blocks):
        y = g.conv(g.conv(main, hidden, hidden), hidden, hidden, k=3)
        main = g.one("Add", [y, main]) if shortcut else y
    return g.conv(g.one("Concat", [main, side], axis=1), 2 * hidden, c_out)


def detector_graph(size: int = 640, seed: int = 0) -> Any:
    """YOLOX-L at size x size: [1, cells, 85]; its objectness finds nobody."""
    g = _Graph(seed)
    quarters = [g.one("Slice", ["images", g.const([dy, dx]), g.const([size, size]),
                                g.const([2, 3]), g.const([2, 2])])
                for dx, dy in ((0, 0), (0, 1), (1, 0), (1, 1))]
    x = g.conv(g.one("Concat", quarters, axis=1), 12, 64, k=3)
    x = _csp(g, g.conv(x, 64, 128, k=3, stride=2), 128, 128, 3, True)
    dark3 = _csp(g, g.conv(x, 128, 256, k=3, stride=2), 256, 256, 9, True)
    dark4 = _csp(g, g.conv(dark3, 256, 512, k=3, stride=2), 512, 512, 9, True)
    x = g.conv(g.conv(dark4, 512, 1024, k=3, stride=2), 1024, 512)
    pools = [g.one("MaxPool", [x], kernel_shape=[k, k], strides=[1, 1], pads=[k // 2] * 4)
             for k in (5, 9, 13)]
    x = g.conv(g.one("Concat", [x, *pools], axis=1), 2048, 1024)
    dark5 = _csp(g, x, 1024, 1024, 3, False)
    scales = g.weight(np.array([1, 1, 2, 2], np.float32), "scales")

    def up(y: str) -> str:
        return g.one("Resize", [y, "", scales], mode="nearest")

    fpn0 = g.conv(dark5, 1024, 512)
    f0 = _csp(g, g.one("Concat", [up(fpn0), dark4], axis=1), 1024, 512, 3, False)
    fpn1 = g.conv(f0, 512, 256)
    pan2 = _csp(g, g.one("Concat", [up(fpn1), dark3], axis=1), 512, 256, 3, False)
    pan1 = _csp(g, g.one("Concat", [g.conv(pan2, 256, 256, k=3, stride=2), fpn1], axis=1),
                512, 512, 3, False)
    pan0 = _csp(g, g.one("Concat", [g.conv(pan1, 512, 512, k=3, stride=2), fpn0], axis=1),
                1024, 1024, 3, False)
    levels = []
    for feature, channels in ((pan2, 256), (pan1, 512), (pan0, 1024)):
        stem = g.conv(feature, channels, 256)
        kinds = g.conv(g.conv(g.conv(stem, 256, 256, k=3), 256, 256, k=3), 256, 80,
                       act=False, bias=-10.0)
        reg = g.conv(g.conv(stem, 256, 256, k=3), 256, 256, k=3)
        box = g.conv(reg, 256, 4, act=False, gain=0.01)  # exp() of it stays finite
        objectness = g.conv(reg, 256, 1, act=False, bias=-10.0)
        level = g.one("Concat", [box, g.one("Sigmoid", [objectness]),
                                 g.one("Sigmoid", [kinds])], axis=1)
        levels.append(g.one("Reshape", [level, g.const([1, 85, -1])]))
    out = g.one("Transpose", [g.one("Concat", levels, axis=2)], perm=[0, 2, 1])
    return g.model({"images": [1, 3, size, size]}, {"output": out})


def _cspnext(g: _Graph, x: str, channels: int, blocks: int, identity: bool) -> str:
    """CSPNeXt's CSPLayer (expand 0.5, CSPNeXtBlocks with a depthwise 5x5, channel
    attention)."""
    mid = channels // 2
    main, side = g.conv(x, channels, mid), g.conv(x, channels, mid)
    for _ in range(blocks):
        y = g.conv(main, mid, mid, k=3)
        y = g.conv(g.conv(y, mid, mid, k=5, groups=mid), mid, mid)
        main = g.one("Add", [y, main]) if identity else y
    x = g.one("Concat", [main, side], axis=1)
    gate = g.one("HardSigmoid", [g.conv(g.one("GlobalAveragePool", [x]), 2 * mid, 2 * mid,
                                        act=False)], alpha=1 / 6, beta=0.5)
    return g.conv(g.one("Mul", [x, gate]), 2 * mid, channels)


def _scale_norm(g: _Graph, x: str, dim: int) -> str:
    norm = g.one("ReduceL2", [x], axes=[-1], keepdims=1)
    norm = g.one("Clip", [g.one("Mul", [norm, g.weight(np.float32(dim ** -0.5), "s")]),
                          g.weight(np.float32(1e-5), "eps"), ""])
    return g.one("Mul", [g.one("Div", [x, norm]), g.weight(np.float32(1.0), "g")])


def pose_graph(height: int = 384, width: int = 288, seed: int = 1) -> Any:
    """RTMPose-l at height x width: simcc_x [1, 133, 2 width], simcc_y [1, 133, 2 height]."""
    g = _Graph(seed)
    x = g.conv(g.conv(g.conv("input", 3, 32, k=3, stride=2), 32, 32, k=3), 32, 64, k=3)
    for c_in, c_out, blocks, spp in ((64, 128, 3, False), (128, 256, 6, False),
                                     (256, 512, 6, False), (512, 1024, 3, True)):
        x = g.conv(x, c_in, c_out, k=3, stride=2)
        if spp:
            y = g.conv(x, c_out, c_out // 2)
            pools = [y]
            for _ in range(3):
                pools.append(g.one("MaxPool", [pools[-1]], kernel_shape=[5, 5],
                                   strides=[1, 1], pads=[2] * 4))
            x = g.conv(g.one("Concat", pools, axis=1), 2 * c_out, c_out)
        x = _cspnext(g, x, c_out, blocks, identity=not spp)
    cells = (height // 32) * (width // 32)
    x = g.conv(x, 1024, 133, k=7, act=False)
    x = g.one("Reshape", [x, g.const([1, 133, cells])])
    x = g.linear(_scale_norm(g, x, cells), cells, 256)
    uv = g.linear(_scale_norm(g, x, 256), 256, 2 * 512 + 128)
    uv = g.one("Mul", [uv, g.one("Sigmoid", [uv])])
    u, v, base = g.one("Split", [uv, g.const([512, 512, 128])], outputs=3, axis=2)
    base = g.one("Unsqueeze", [base, g.const([2])])
    qk = g.one("Add", [g.one("Mul", [base, g.weight(
        g.rng.standard_normal((2, 128), np.float32) * np.float32(0.02) + 1)]),
        g.weight(np.zeros((2, 128), np.float32))])
    q, k = (g.one("Squeeze", [part, g.const([2])])
            for part in g.one("Split", [qk, g.const([1, 1])], outputs=2, axis=2))
    attention = g.one("Div", [g.one("MatMul", [q, g.one("Transpose", [k], perm=[0, 2, 1])]),
                              g.weight(np.float32(128 ** 0.5), "s")])
    kernel = g.one("Pow", [g.one("Relu", [attention]), g.weight(np.float32(2.0), "p")])
    mixed = g.one("Mul", [u, g.one("MatMul", [kernel, v])])
    x = g.one("Add", [g.one("Mul", [x, g.weight(np.ones(256, np.float32), "r")]),
                      g.linear(mixed, 512, 256)])
    return g.model({"input": [1, 3, height, width]},
                   {"simcc_x": g.linear(x, 256, 2 * width),
                    "simcc_y": g.linear(x, 256, 2 * height)})


def rows(sizes: tuple[int, ...], device: Any, repeat: int, folder: Path,
         picture: Any) -> list[dict[str, Any]]:
    """One row per size: ours eager and replayed (diffusion.preprocessors.annotators), the
    graphs saved as the extension's files under `folder`/openpose."""
    import onnx

    from diffusion.preprocessors import annotators, dwpose

    from . import _harness

    (folder / "openpose").mkdir(exist_ok=True)
    for name, make in (("yolox_l.onnx", detector_graph), ("dw-ll_ucoco_384.onnx", pose_graph)):
        onnx.save(make(), folder / "openpose" / name)
    out = []
    for size in sizes:
        image = picture(size)
        boxes = np.array([[(i / 3 + 0.02) * size, 0.1 * size, ((i + 1) / 3 - 0.02) * size,
                           0.9 * size] for i in range(3)], np.float64)

        def ours(image: np.ndarray = image, boxes: np.ndarray = boxes) -> Any:
            dwpose.detect_boxes(image, dwpose._network("yolox_l.onnx", device))
            return dwpose.wholebody_keypoints(
                image, boxes, dwpose._network("dw-ll_ucoco_384.onnx", device))[0]

        row: dict[str, Any] = {"work": f"dw_openpose_full {size}x{size}", "dtype": "float32",
                               "mode": "YOLOX-L step + 3 RTMPose-l crops",
                               "error": "no reference on torch's device (the extension runs "
                                        "the ONNX files with OpenCV's DNN on the CPU)"}
        try:
            annotators.REPLAY = False
            eager = ours()
            row["ours_eager_wall_ms"] = _harness.numpy_ms(ours, warmup=0, repeat=repeat)
            annotators.REPLAY = True
            row["ours_wall_ms"] = _harness.numpy_ms(ours, warmup=1, repeat=repeat)
            row["replay_equal"] = bool(np.array_equal(ours(), eager, equal_nan=True))
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        out.append(row)
        print(row, flush=True)
    return out
