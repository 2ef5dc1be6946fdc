"""DeepDanbooru (the WebUI's PyTorch port, `model-resnet_custom_v3.pt`) on gpustd: a ResNet of
bottleneck blocks scoring an anime picture against each of its tags.

    model = DeepDanbooru.from_state_dict(tensors, tags, device=device)
    scores = model(pixels)      # [1, H, W, 3] RGB in 0..1 (512x512) -> [len(tags)] in 0..1

Keys `n_Conv_0` .. `n_Conv_178` (`.weight`, `.bias`; the last has no bias); the tag names are
the file's `tags` list. The layout (which convs form a block, where a block's stride 2 and
projection shortcut are) is the port's `forward`, written here as `_STAGES`: every 3x3 conv of
stride 1 is zero-padded by one, one of stride 2 by one on the right and bottom only, the 7x7
stem by 2 (left/top) and 3 (right/bottom); the stem's 3x3 max pool of stride 2 sees one more
column and row on the right and bottom. Widths come from the weights, so smaller models of the
same layout load too. Sizes must be multiples of 128 (seven halvings with these paddings).
torch: the WebUI's `modules.deepbooru_model.DeepDanbooruModel`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import gpustd
from gpucore import Device, default_device
from gpustd import Tensor
from gpustd.nn import conv2d, pad

__all__ = ["LAST_CONV", "DeepDanbooru"]

LAST_CONV = 178  # n_Conv_178: the tag logits (1x1, no bias)
# (first conv, blocks, stride of the first block, its projection after its three convs):
# a stage's first block has a projection shortcut (1x1, the block's stride), the others add
# their input; in n_Conv_97's block the port numbers the projection last
_STAGES = ((1, 3, 1, False), (11, 8, 2, False), (36, 20, 2, False), (97, 20, 2, True),
           (158, 3, 2, False), (168, 3, 2, False))


def _relu(x: Tensor) -> Tensor:
    return gpustd.clip(x, 0.0, None)


class DeepDanbooru:
    """DeepDanbooru with weights on `device` and its tag names (see the module docstring)."""

    def __init__(self, weights: Mapping[str, Tensor], tags: Sequence[str]) -> None:
        self.weights = dict(weights)
        self.tags = list(tags)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], tags: Sequence[str], *,
                        device: Device | None = None) -> DeepDanbooru:
        """Build from a state dict of numpy arrays and the tag names. Raises ValueError when
        a conv is missing or the tags do not match the last conv's outputs."""
        missing = [i for i in range(LAST_CONV + 1) if f"n_Conv_{i}.weight" not in state]
        if missing:
            raise ValueError(f"not a DeepDanbooru state dict (no 'n_Conv_{missing[0]}.weight'"
                             "); use the WebUI's model-resnet_custom_v3.pt")
        outputs = np.shape(state[f"n_Conv_{LAST_CONV}.weight"])[0]
        if len(tags) != outputs:
            raise ValueError(f"the DeepDanbooru file has {len(tags)} tag names for {outputs} "
                             "scores; the file is damaged")
        device = device or default_device()
        weights = {key: Tensor.from_numpy(np.asarray(state[key], np.float32), device=device)
                   for key in state if key.startswith("n_Conv_")}
        return cls(weights, tags)

    def _conv(self, index: int, x: Tensor, *, stride: int = 1, add: Tensor | None = None,
              relu: bool = True) -> Tensor:
        weight = self.weights[f"n_Conv_{index}.weight"]
        padding = 0
        if weight.shape[-1] == 3:
            if stride == 2:  # TensorFlow's "same" padding, as the port writes it
                x = pad(x, (0, 1, 0, 1))
            else:
                padding = 1
        out = conv2d(x, weight, self.weights.get(f"n_Conv_{index}.bias"), stride=stride,
                     padding=padding, add=add)
        return _relu(out) if relu else out

    def _block(self, first: int, x: Tensor, *, stride: int, projection: int | None) -> Tensor:
        skip = x if projection is None else self._conv(projection, x, stride=stride, relu=False)
        h = self._conv(first, x)
        h = self._conv(first + 1, h, stride=stride)
        return self._conv(first + 2, h, add=skip)

    def __call__(self, pixels: Tensor) -> Tensor:
        """[1, H, W, 3] RGB in 0..1 (H, W multiples of 128; the WebUI gives 512x512) ->
        [len(tags)] scores in 0..1. torch: `DeepDanbooruModel()(pixels)[0]`."""
        _, height, width, _ = pixels.shape
        if height % 128 or width % 128:
            raise ValueError(f"DeepDanbooru takes sizes that are multiples of 128, got "
                             f"{width}x{height}; resize the picture to 512x512")
        x = gpustd.transpose(pixels, (0, 3, 1, 2))
        x = self._conv(0, pad(x, (2, 3, 2, 3)), stride=2)
        # the port pads with -inf before pooling; after the ReLU a 0 never wins either
        x = pad(x, (0, 1, 0, 1))
        ho, wo = (x.shape[2] - 3) // 2 + 1, (x.shape[3] - 3) // 2 + 1
        pooled = x[:, :, 0:2 * ho - 1:2, 0:2 * wo - 1:2]
        for dy in range(3):
            for dx in range(3):
                if dy or dx:
                    pooled = gpustd.maximum(
                        pooled, x[:, :, dy:dy + 2 * ho - 1:2, dx:dx + 2 * wo - 1:2])
        x = pooled
        for first, blocks, stride, projection_last in _STAGES:
            if projection_last:
                x = self._block(first, x, stride=stride, projection=first + 3)
            else:
                x = self._block(first + 1, x, stride=stride, projection=first)
            for block in range(1, blocks):
                x = self._block(first + 1 + 3 * block, x, stride=1, projection=None)
        logits = conv2d(x, self.weights[f"n_Conv_{LAST_CONV}.weight"])
        return gpustd.sigmoid(gpustd.mean(logits, axis=(2, 3)))[0]
