"""NucleusMoE-Image's mixture of experts (diffusers' names, transformer_nucleusmoe_image.py):
expert-choice routing, where each expert picks its own tokens, a shared SwiGLU expert every
token passes, and the routed SwiGLU experts packed in two weights per layer.

Routing runs on the host: the router's logits (B, S, E) are read back (a few kilobytes a
block), each expert e takes the C = max(1, ceil(capacity_factor * S / E)) tokens of each
picture with the largest scores (softmax, or sigmoid, over the experts, rounded to the
model's dtype as diffusers rounds them), and a token's weights are its scores from the
experts that chose it divided by their sum, times route_scale. Every expert takes exactly C
tokens of each picture, so dispatch is a gather into a dense (E, B * C, D) block and two
batched matmuls (gate_up_proj, down_proj) for all experts at once: no per-expert launches and
no padding. A token chosen by k experts (0 to E of them) gets its k weighted outputs summed
by one gather into (B * S, m, D), m the most choices any token has, the missing ones pointing
at a zero row, and a sum over m.

    routes = expert_choice(logits, capacity_factor=8.0, route_scale=2.5)
    y = layer(x, unmodulated, temb)   # NucleusMoELayer
"""

from __future__ import annotations

import math
import typing
from typing import NamedTuple

import numpy as np

import gpustd
from gpustd import Tensor, asarray, concatenate, matmul, nn, take_slice, zeros
from gpustd.gather import gather

from .flux2 import swiglu
from .layers import Place

__all__ = ["NucleusMoELayer", "Routes", "SharedSwiGLU", "SwiGLUExperts", "expert_choice"]


class Routes(NamedTuple):
    """An expert-choice routing of B pictures of S tokens: `tokens` (E, B * C) int, the
    chosen rows of the flattened (B * S) tokens, each expert's pictures one after another;
    `weights` (E, B * C) float32, each choice's normalised, scaled weight."""

    tokens: np.ndarray
    weights: np.ndarray

    def per_expert(self) -> np.ndarray:
        """How many tokens each expert takes (E,): B * C for every one."""
        return np.full(len(self.tokens), self.tokens.shape[1])

    def choices_per_token(self, count: int) -> np.ndarray:
        """How many experts chose each of the `count` (B * S) tokens."""
        return np.bincount(self.tokens.reshape(-1), minlength=count)


def expert_choice(logits: np.ndarray, *, capacity_factor: float, route_scale: float,
                  use_sigmoid: bool = False) -> Routes:
    """The routing of the router's logits (B, S, E) (see the module docstring); scores are
    computed in float32 and rounded to the logits' dtype before the choice, as diffusers'
    are. torch: `NucleusMoELayer.forward`'s topk over `affinity` and its `gating_flat`."""
    batch, length, experts = logits.shape
    wide = logits.astype(np.float32)
    if use_sigmoid:
        scores = 1.0 / (1.0 + np.exp(-wide))
    else:
        scores = np.exp(wide - wide.max(axis=-1, keepdims=True))
        scores = scores / scores.sum(axis=-1, keepdims=True)
    affinity = scores.astype(logits.dtype).astype(np.float32).transpose(0, 2, 1)  # (B, E, S)
    capacity = max(1, math.ceil(capacity_factor * length / experts))
    if capacity > length:
        raise ValueError(f"capacity_factor {capacity_factor} has each of {experts} experts "
                         f"take {capacity} of {length} tokens; it must be at most {experts}")
    # the largest first, ties to the earlier token (torch.topk's order on the CPU)
    top = np.argsort(-affinity, axis=-1, kind="stable")[..., :capacity]  # (B, E, C)
    gating = np.take_along_axis(affinity, top, axis=-1)
    tokens = (top + (np.arange(batch) * length)[:, None, None]).transpose(1, 0, 2)
    tokens = tokens.reshape(experts, -1)
    gating = gating.transpose(1, 0, 2).reshape(experts, -1)
    sums = np.bincount(tokens.reshape(-1), gating.reshape(-1), minlength=batch * length)
    weights = gating / (sums[tokens] + 1e-12) * route_scale
    return Routes(tokens, weights.astype(np.float32))


class SwiGLUExperts(nn.Module):
    """E SwiGLU experts in two packed weights, stored pre-transposed: gate_up_proj (E, D,
    2 * I) and down_proj (E, I, D); expert e maps x to (silu(gate) * up) @ down_proj[e] where
    gate, up = x @ gate_up_proj[e] split in halves. diffusers: `SwiGLUExperts`."""

    def __init__(self, dim: int, inner: int, experts: int, place: Place) -> None:
        self.inner = inner
        self.gate_up_proj = nn.parameter((experts, dim, 2 * inner), place["dtype"],
                                         place["device"])
        self.down_proj = nn.parameter((experts, inner, dim), place["dtype"], place["device"])

    def forward(self, x: Tensor) -> Tensor:
        """x (E, T, D), expert e's T tokens in row e -> (E, T, D)."""
        h = matmul(x, self.gate_up_proj)
        return matmul(swiglu(take_slice(h, 0, self.inner, axis=2),
                             take_slice(h, self.inner, 2 * self.inner, axis=2)),
                      self.down_proj)


class SharedSwiGLU(nn.Module):
    """net.2(hidden * silu(gate)), hidden and gate the halves of net.0.proj(x) in that order,
    no biases. diffusers: `FeedForward(activation_fn="swiglu", bias=False)`."""

    def __init__(self, dim: int, inner: int, place: Place) -> None:
        self.inner = inner
        self.net = nn.ModuleList([_Proj(dim, 2 * inner, place), nn.Identity(),
                                  nn.Linear(inner, dim, False, **place)])

    def forward(self, x: Tensor) -> Tensor:
        h = typing.cast(_Proj, self.net[0]).proj(x)
        axis = h.ndim - 1
        act = swiglu(take_slice(h, self.inner, 2 * self.inner, axis=axis),
                     take_slice(h, 0, self.inner, axis=axis))
        return typing.cast(nn.Linear, self.net[2])(act)


class _Proj(nn.Module):
    """diffusers' activation module holding the projection (`net.0.proj`)."""

    def __init__(self, dim: int, out: int, place: Place) -> None:
        self.proj = nn.Linear(dim, out, False, **place)


class NucleusMoELayer(nn.Module):
    """shared_expert(x) + for each expert e choosing token t: weight * experts[e](x_t), the
    router (`gate`, no bias) reading [temb, unmodulated] per token. diffusers:
    `NucleusMoELayer(hidden_size, moe_intermediate_dim, num_experts, capacity_factor,
    use_sigmoid, route_scale)` (its `use_grouped_mm` only picks torch's kernel)."""

    # --int8 leaves the router float: a rounding that flips a choice changes a token's output
    float_linears = ("gate",)

    def __init__(self, dim: int, inner: int, experts: int, capacity_factor: float,
                 use_sigmoid: bool, route_scale: float, place: Place) -> None:
        self.capacity_factor, self.use_sigmoid = capacity_factor, use_sigmoid
        self.route_scale, self.experts_count = route_scale, experts
        self.gate = nn.Linear(2 * dim, experts, False, **place)
        self.experts = SwiGLUExperts(dim, inner, experts, place)
        self.shared_expert = SharedSwiGLU(dim, inner, place)
        self.last_routes: Routes | None = None  # the last call's, for tests and benches

    def route(self, unmodulated: Tensor, temb: Tensor) -> Routes:
        """The routing of unmodulated (B, S, D) under temb (B, D): the router's logits of
        [temb, x] per token, read back and routed by `expert_choice`."""
        batch, _, dim = unmodulated.shape
        weight = self.gate.weight
        # [temb, x] @ W^T as x @ W[:, D:]^T plus temb @ W[:, :D]^T: no (B, S, 2D) copy
        logits = nn.linear(unmodulated, take_slice(weight, dim, 2 * dim, axis=1))
        logits = logits + nn.linear(temb, take_slice(weight, 0, dim, axis=1)).reshape(
            batch, 1, -1)
        return expert_choice(logits.numpy(), capacity_factor=self.capacity_factor,
                             route_scale=self.route_scale, use_sigmoid=self.use_sigmoid)

    def forward(self, x: Tensor, unmodulated: Tensor, temb: Tensor) -> Tensor:
        """x (B, S, D) the modulated tokens the experts read, unmodulated (B, S, D) and temb
        (B, D) what the router reads -> (B, S, D)."""
        batch, length, dim = x.shape
        routes = self.last_routes = self.route(unmodulated, temb)
        experts, per_expert = routes.tokens.shape
        flat = x.reshape(batch * length, dim)
        picked = gather(flat, asarray(routes.tokens.astype(np.int32), device=x.device), 0)
        routed = self.experts(picked).reshape(experts * per_expert, dim)
        routed = routed * asarray(routes.weights.reshape(-1, 1), dtype=x.dtype, device=x.device)
        # each token's choices as rows of [routed; 0]: a gather and a sum over the slots
        rows = _combine_rows(routes.tokens.reshape(-1), batch * length)
        padded = concatenate([routed, zeros((1, dim), x.dtype, device=x.device)], axis=0)
        slots = gather(padded, asarray(rows, device=x.device), 0)  # (B * S, m, D)
        total = gpustd.sum(slots, axis=1)
        return (self.shared_expert(flat) + total).reshape(batch, length, dim)


def _combine_rows(tokens: np.ndarray, count: int) -> np.ndarray:
    """(count, m) int32: for each token the rows of `tokens` (the flat choices) that chose
    it, in expert order, then the zero row's index (len(tokens)) to fill m, the most any
    token has."""
    order = np.argsort(tokens, kind="stable")
    counts = np.bincount(tokens, minlength=count)
    width = max(1, int(counts.max()))
    rows = np.full((count, width), len(tokens), np.int32)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(tokens)) - np.repeat(starts, counts)
    rows[tokens[order], slot] = order
    return rows
