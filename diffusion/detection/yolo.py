"""YOLOv8's detection network on gpustd: Conv (conv + folded BatchNorm + SiLU), C2f, SPPF,
nearest upsampling, Concat and the Detect head (per level a box branch of 4 x reg_max bins
and a class branch), built from ultralytics' own module tree (see `yolo_file`).

    network = YoloNetwork(layers)             # layers: YoloLayer, in the file's order
    heads = network(x)                        # x [1, 3, H, W] in [0, 1], H, W multiples of 32
    boxes, scores = decode(heads, reg_max)    # [A, 4] xywh pixels, [A, classes] after sigmoid

torch: `ultralytics.nn.tasks.DetectionModel(...)(x)[0]` gives `cat([boxes.T, scores.T])`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import gpustd
from gpustd import Tensor
from gpustd.nn import concat, conv2d, silu, upsample_nearest2x

__all__ = ["Conv", "YoloLayer", "YoloNetwork", "decode", "max_pool_same"]

Block = Callable[[Any], Any]


@dataclass
class Conv:
    """A convolution with its BatchNorm folded in (weight [out, in/groups, k, k], bias [out]),
    then SiLU when `act`. torch: ultralytics' `Conv` (or a plain `nn.Conv2d`: act False)."""

    weight: Tensor
    bias: Tensor
    stride: int
    padding: int
    groups: int
    dilation: int
    act: bool

    def __call__(self, x: Tensor) -> Tensor:
        y = conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding,
                   dilation=self.dilation, groups=self.groups)
        return silu(y) if self.act else y


def sequence(blocks: Sequence[Block]) -> Block:
    def run(x: Any) -> Any:
        for block in blocks:
            x = block(x)
        return x
    return run


@dataclass
class C2f:
    """cv1 (its two output halves as two convs: torch's `chunk(2, 1)`), the bottlenecks each
    on the last output, cv2 over all of them joined. torch: ultralytics' `C2f`."""

    first: Conv
    second: Conv
    bottlenecks: list[tuple[Conv, Conv, bool]]
    out: Conv

    def __call__(self, x: Tensor) -> Tensor:
        outputs = [self.first(x), self.second(x)]
        for cv1, cv2, shortcut in self.bottlenecks:
            y = cv2(cv1(outputs[-1]))
            outputs.append(outputs[-1] + y if shortcut else y)
        return self.out(concat(outputs, axis=1))


def max_pool_same(x: np.ndarray, kernel: int) -> np.ndarray:
    """Max pooling, stride 1, padding kernel // 2 (padded with -inf) over [N, C, H, W].
    torch: `F.max_pool2d(x, kernel, 1, kernel // 2)`."""
    pad = kernel // 2
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    h, w = x.shape[-2:]
    out = np.full_like(x, -np.inf)
    for dy in range(kernel):
        for dx in range(kernel):
            np.maximum(out, padded[..., dy:dy + h, dx:dx + w], out=out)
    return out


@dataclass
class SPPF:
    """cv1, three max poolings in a row, cv2 over the four joined. The poolings run on the host:
    they see the network's smallest map (1/32 of the picture). torch: ultralytics' `SPPF`."""

    first: Conv
    out: Conv
    kernel: int

    def __call__(self, x: Tensor) -> Tensor:
        y = self.first(x)
        maps, pooled = [y], y.numpy()
        for _ in range(3):
            pooled = max_pool_same(pooled, self.kernel)
            maps.append(gpustd.asarray(pooled, device=y.device))
        return self.out(concat(maps, axis=1))


@dataclass
class Detect:
    """Per level: the box branch (4 x reg_max bin logits) and the class branch, joined on
    channels. torch: ultralytics' `Detect` before its decoding (`_inference`)."""

    boxes: list[Block]
    classes: list[Block]

    def __call__(self, levels: list[Tensor]) -> list[np.ndarray]:
        return [np.concatenate([box(x).numpy(), cls(x).numpy()], axis=1)
                for x, box, cls in zip(levels, self.boxes, self.classes)]


def upsample(x: Tensor) -> Tensor:
    return upsample_nearest2x(x)


def join(xs: list[Tensor]) -> Tensor:
    return concat(xs, axis=1)


@dataclass
class YoloLayer:
    """One entry of ultralytics' `model.model`: its block and where its input comes from
    (`f`: -1 the previous layer, an index, or a list of them)."""

    block: Block
    source: int | list[int]


class YoloNetwork:
    """The layers run in order, each on its `source` outputs; the last is the head (Detect, or
    segment's Segment), which returns each level's raw map [1, 4 * reg_max + classes, h, w] as
    numpy."""

    def __init__(self, layers: list[YoloLayer], reg_max: int, dfl: np.ndarray) -> None:
        self.layers, self.reg_max, self.dfl = layers, reg_max, dfl

    @property
    def head(self) -> Any:
        return self.layers[-1].block

    def features(self, x: Tensor) -> list[Tensor]:
        """The head's inputs: the layers before it run on `x`."""
        outputs: list[Any] = []
        y: Any = x
        for layer in self.layers:
            if isinstance(layer.source, int):
                inputs = y if layer.source == -1 else outputs[layer.source]
            else:
                inputs = [y if i == -1 else outputs[i] for i in layer.source]
            if layer is self.layers[-1]:
                return inputs
            y = layer.block(inputs)
            outputs.append(y)
        raise ValueError("a YOLO network needs at least its head")

    def __call__(self, x: Tensor) -> list[np.ndarray]:
        return self.head(self.features(x))


def decode(levels: list[np.ndarray], image_size: tuple[int, int], reg_max: int,
           dfl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [A, 4] (centre x, centre y, width, height in input pixels) and class scores
    [A, classes] from the Detect maps: anchors at the cell centres, each side's distance the
    expectation of its softmaxed bins (DFL, `dfl` its [reg_max] weights), times the level's
    stride (the input's size over the map's). torch: `Detect._inference`."""
    flat = np.concatenate([m.reshape(m.shape[1], -1) for m in levels], axis=1).astype(np.float64)
    anchors, strides = [], []
    for m in levels:
        h, w = m.shape[-2:]
        ys, xs = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
        anchors.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        strides.append(np.full(h * w, image_size[0] / h))
    anchor, stride = np.concatenate(anchors), np.concatenate(strides)[:, None]
    bins = flat[:4 * reg_max].reshape(4, reg_max, -1)
    bins = np.exp(bins - bins.max(axis=1, keepdims=True))
    distance = (np.einsum("sba,b->sa", bins, dfl) / bins.sum(axis=1)).T  # [A, 4] l t r b
    top_left, bottom_right = anchor - distance[:, :2], anchor + distance[:, 2:]
    boxes = np.concatenate([(top_left + bottom_right) / 2, bottom_right - top_left], axis=1)
    scores = 1 / (1 + np.exp(-flat[4 * reg_max:].T))
    return (boxes * stride).astype(np.float32), scores.astype(np.float32)
