"""The Brownian-tree noise of the SDE samplers, as the WebUI draws it, without torch.

The WebUI's SDE samplers (DPM++ SDE, DPM++ 2M SDE, ...) take their noise from k-diffusion's
`BrownianTreeNoiseSampler`, seeded with the batch's per-image seeds (`create_noise_sampler` in
`modules/sd_samplers_common.py`): one `torchsde.BrownianTree` per image, each over
[sigma_min, sigma_max]. The noise of a step from sigma to sigma_next is the Brownian increment
W(sigma_next) - W(sigma) divided by sqrt(|sigma_next - sigma|), a standard normal.

torchsde 0.2.6's tree (`_brownian/brownian_interval.py`, with BrownianTree's settings: tolerance
1e-6, entropy pool 24, halfway tree, no Levy area) is a binary tree of intervals split at their
rounded midpoints. The root's increment is a normal draw scaled by sqrt(t1 - t0); a child's
comes from its parent's by the Brownian bridge (mean in proportion to length, variance
left * right / length) with noise from a generator seeded by
`numpy.random.SeedSequence(entropy, spawn_key=(key, depth), pool_size=24)`, where the key
numbers the node's path from the root. A query is the sum of the increments of the nodes that
tile it. Each normal draw is `torch.randn` on a fresh CPU generator, which
`diffusion.noise.rng.TorchCPUGenerator` reproduces bit for bit, and the float32 arithmetic is
torch's (Python scalars rounded to float32 before the product): the increments equal torchsde's
bit for bit. The last division, by sqrt(|sigma_next - sigma|), may differ by one float32 ulp: torch
2.13's float32 `sqrt` on CPU is not correctly rounded (measured: one value in five is one ulp
off the correctly rounded root, which numpy gives). So a step's noise agrees with the WebUI's
to 1.2e-7 relative, not always bit for bit.

Cost: every split draws a normal array of the image's size, about 20 splits for a step's first
query, so the noise of a 4x64x64 latent costs about 0.2 s per query on one CPU core.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, SupportsFloat

import numpy as np

from diffusion.noise.rng import TorchCPUGenerator

__all__ = ["BrownianTreeNoise"]

_f32 = np.float32
_DIGITS = 6  # torchsde BrownianTree's tol=1e-6: times are rounded to 6 decimal digits
_POOL_SIZE = 24  # BrownianTree's entropy pool size
_CACHE_SIZE = 64  # increments kept per tree (torchsde keeps 45; a cache only saves time)


class BrownianTreeNoise:
    """k-diffusion's `BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=seeds)` in numpy.

    `shape` is the latent batch's shape (B, ...). `seeds` is one int per batch item (the WebUI
    passes the images' seeds: one tree per image, so an image's noise does not depend on the
    batch it is in), or a single int for one tree over the whole shape. Calling it with
    (sigma, sigma_next) gives the standard-normal noise of that step, float64 holding the
    float32 values torch computes. Sigmas are taken as float32, as the WebUI's tensors hold them.
    """

    def __init__(self, shape: Sequence[int], sigma_min: float, sigma_max: float,
                 seeds: int | Sequence[int]) -> None:
        shape = tuple(int(n) for n in shape)
        low, high = _f32(sigma_min), _f32(sigma_max)
        if not (np.isfinite(low) and np.isfinite(high) and 0 <= low and low != high):
            raise ValueError(f"sigma_min and sigma_max must be finite, non-negative and "
                             f"different, got {sigma_min} and {sigma_max}")
        self._sign = 1 if low < high else -1
        low, high = min(low, high), max(low, high)
        self._batched = isinstance(seeds, (Sequence, np.ndarray))
        if isinstance(seeds, (Sequence, np.ndarray)):  # batched: narrows seeds for mypy
            seeds = [_check_seed(seed) for seed in seeds]
            if not shape or len(seeds) != shape[0]:
                raise ValueError(f"give one seed per batch item: {len(seeds)} seeds for "
                                 f"shape {shape}")
            self._trees = [_BrownianTree(low, high, shape[1:], seed) for seed in seeds]
        else:
            self._trees = [_BrownianTree(low, high, shape, _check_seed(seeds))]

    def __call__(self, sigma: float, sigma_next: float) -> np.ndarray:
        """Standard-normal noise of the step from `sigma` to `sigma_next` (either order)."""
        t0, t1 = _f32(sigma), _f32(sigma_next)
        if t0 == t1:
            raise ValueError(f"sigma and sigma_next are equal ({sigma}); a step needs two "
                             "different noise levels")
        sign = 1 if t0 < t1 else -1
        low, high = (t0, t1) if t0 < t1 else (t1, t0)
        increments = np.stack([tree.increment(float(low), float(high)) for tree in self._trees])
        if self._sign * sign < 0:
            increments = -increments
        noise = increments / np.sqrt(np.abs(t1 - t0))
        return (noise if self._batched else noise[0]).astype(np.float64)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seeds must be non-negative ints (numpy's SeedSequence entropy), "
                         f"got {seed!r}")
    return int(seed)


def _round(t: float) -> float:
    return round(t, _DIGITS)


def _randn(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """torchsde's `_randn`: `torch.randn` from a CPU generator freshly seeded with `seed`."""
    return TorchCPUGenerator(int(seed)).randn(shape)


class _Node:
    """An interval [start, end] of the tree; `midway`, the seeds and children once split."""

    __slots__ = (
        "depth",
        "end",
        "is_left",
        "key",
        "left",
        "midway",
        "parent",
        "right",
        "start",
        "w_seed",
    )
    start: float
    end: float
    parent: _Node | None
    is_left: bool
    key: int
    depth: int
    midway: float | None
    # set by the split:
    w_seed: int
    left: _Node
    right: _Node

    def __init__(self, start: float, end: float, parent: _Node | None, is_left: bool) -> None:
        self.start, self.end = _round(start), _round(end)
        self.parent, self.is_left = parent, is_left
        # torchsde numbers a node by its path: key = 2 * parent key + (0 left, 1 right)
        self.key = 0 if parent is None else 2 * parent.key + (0 if is_left else 1)
        self.depth = 0 if parent is None else parent.depth + 1
        self.midway: float | None = None


class _BrownianTree:
    """One `torchsde.BrownianTree(t0, zeros(shape), t1, entropy=seed)`: increments only."""

    def __init__(self, t0: SupportsFloat, t1: SupportsFloat, shape: tuple[int, ...],
                 entropy: int) -> None:
        self._shape, self._entropy = shape, entropy
        self._root = _Node(float(t0), float(t1), None, False)
        w_seed = np.random.SeedSequence(entropy, pool_size=_POOL_SIZE).generate_state(3)[0]
        self._root_w = _randn(w_seed, shape) * _f32(math.sqrt(float(t1) - float(t0)))
        self._increments: OrderedDict[_Node, np.ndarray] = OrderedDict()
        self._noises: OrderedDict[_Node, np.ndarray] = OrderedDict()

    def increment(self, ta: float, tb: float) -> np.ndarray:
        """W(tb) - W(ta) for ta < tb, float32 (times clamped to the tree's interval)."""
        root = self._root
        ta = _round(min(max(ta, root.start), root.end))
        tb = _round(min(max(tb, root.start), root.end))
        if ta == tb:
            raise ValueError(f"the step's sigmas are closer than the Brownian tree's resolution "
                             f"(10**-{_DIGITS}) and resolve to the same time {ta}")
        pieces: list[_Node] = []
        self._locate(root, ta, tb, pieces)
        total = self._node_increment(pieces[0])
        for node in pieces[1:]:
            total = total + self._node_increment(node)
        return total

    def _locate(self, node: _Node, ta: float, tb: float, out: list[_Node]) -> None:
        """Append the nodes that tile [ta, tb] under `node`, left to right, splitting nodes at
        their midpoints until ta and tb are node boundaries (torchsde's `_loc`)."""
        if ta == node.start and tb == node.end:
            out.append(node)
            return
        if node.midway is None:
            self._split(node, tb if ta == node.start else ta)
        assert node.midway is not None  # split
        if tb <= node.midway:
            self._locate(node.left, ta, tb, out)
        elif ta >= node.midway:
            self._locate(node.right, ta, tb, out)
        else:
            self._locate(node.left, ta, node.midway, out)
            self._locate(node.right, node.midway, tb, out)

    def _split(self, node: _Node, point: float) -> None:
        """Halve `node`, then its child holding `point`, until `point` is a midpoint."""
        middle = 0.5 * (node.end + node.start)
        node.midway = _round(middle)
        seeds = np.random.SeedSequence(self._entropy, spawn_key=(node.key, node.depth),
                                       pool_size=_POOL_SIZE).generate_state(4)
        node.w_seed = int(seeds[0])
        node.left = _Node(node.start, middle, node, True)
        node.right = _Node(middle, node.end, node, False)
        if point > node.midway:
            self._split(node.right, point)
        elif point < node.midway:
            self._split(node.left, point)

    def _node_increment(self, node: _Node) -> np.ndarray:
        """The increment over `node`, from its parent's by the Brownian bridge."""
        if node.parent is None:
            return self._root_w
        if node in self._increments:
            self._increments.move_to_end(node)
            return self._increments[node]
        parent = node.parent
        w = self._node_increment(parent)
        inverse_length = 1 / (parent.end - parent.start)
        assert parent.midway is not None  # a parent is split
        left = parent.midway - parent.start
        right = parent.end - parent.midway
        mean = _f32(left) * w * _f32(inverse_length)
        std = math.sqrt(left * right * inverse_length)
        left_w = mean + _f32(std) * self._noise(parent)
        value = left_w if node.is_left else w - left_w
        _remember(self._increments, node, value)
        return value

    def _noise(self, parent: _Node) -> np.ndarray:
        """The bridge noise of `parent`'s split (both children use the same draw)."""
        if parent in self._noises:
            self._noises.move_to_end(parent)
            return self._noises[parent]
        value = _randn(parent.w_seed, self._shape)
        _remember(self._noises, parent, value)
        return value


def _remember(cache: OrderedDict[_Node, np.ndarray], node: _Node, value: np.ndarray) -> None:
    cache[node] = value
    if len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
