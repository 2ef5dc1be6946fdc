"""The openpose hand and face networks over many crops at once: a picture with many people
has dozens of hands (each at four scales) and faces, and one network call per crop is one
round trip to the device each, with the device mostly idle. Crops of the same size (every
face is 384x384; hands of the same box side share their four sizes) go through the network
stacked along the batch axis, a few at a time so that one activation stays within a
binding's size; each crop's maps are those of its own call (the convolutions see each
image alone).

    outputs = run_batched(network, inputs, max_pixels)   # [1, C, h, w] per [1, 3, H, W]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["Network", "run_batched"]

# a pose network on the host's side: float32 [N, 3, H, W] -> its maps [N, C, H/8, W/8]
Network = Callable[[np.ndarray], np.ndarray]


def run_batched(network: Network, inputs: Sequence[np.ndarray], max_pixels: int
                ) -> list[np.ndarray]:
    """Each float32 [1, 3, H, W] input's network maps (float32 [1, C, h, w]), in order;
    inputs of one size stacked, at most max(1, max_pixels // (H W)) per call."""
    by_size: dict[tuple[int, ...], list[int]] = {}
    for index, planes in enumerate(inputs):
        by_size.setdefault(planes.shape, []).append(index)
    outputs: list[np.ndarray] = [np.empty(0, np.float32)] * len(inputs)
    for shape, indices in by_size.items():
        per_call = max(1, max_pixels // (shape[2] * shape[3]))
        for start in range(0, len(indices), per_call):
            chunk = indices[start:start + per_call]
            maps = np.asarray(network(np.concatenate([inputs[i] for i in chunk])), np.float32)
            for index, one in zip(chunk, maps):
                outputs[index] = one[None]
    return outputs
