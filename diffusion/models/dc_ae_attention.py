"""DC-AE's ReLU linear attention (EfficientViT's LiteMLA kernel), per group of channels.

The q, k and v of every scale lie in one (B, G * 3d, N) tensor, each group's 3d channels its
query, key and value of d channels (the original's `qkv.reshape(B, -1, 3d, N)`: a group need
not be a head of the projections). ReLU is the kernel: out_n = sum_m v_m (k_m . q_n) /
(sum_m k_m . q_n + eps), in float32 as diffusers upcasts it, computed as (v k^T) q, a d x d
product per group instead of the N x N scores. Where N <= d diffusers takes the quadratic
form instead, normalising the N x N scores over the keys; so does this module.
"""

from __future__ import annotations

import typing
from typing import Any

import numpy as np

from gpustd import Tensor, asarray, concatenate, elementwise_kernel, matmul, take_slice

__all__ = ["multiscale_linear_attention"]

_EPS = 1e-15  # SanaMultiscaleLinearAttention's


@elementwise_kernel
def _relu(x):
    return max(x, 0.0)


@elementwise_kernel
def _ratio(numerator, denominator, eps):
    return numerator / (denominator + eps)


def _as(x: Any, dtype: Any) -> Tensor:
    out = typing.cast(Tensor, x)
    return out.astype(dtype) if out.dtype != dtype else out


def _parts(qkv: Tensor, head_dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """(B, G, 3d, N) -> ReLU(q), ReLU(k), v, each (B, G, d, N)."""
    q, k, v = (take_slice(qkv, i * head_dim, (i + 1) * head_dim, axis=2) for i in range(3))
    return typing.cast(Tensor, _relu(q)), typing.cast(Tensor, _relu(k)), v


def _linear(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """diffusers' `apply_linear_attention`: v padded with a row of ones, so that the last row
    of (v k^T) q is the normaliser."""
    b, g, d, n = v.shape
    ones = asarray(np.ones((b, g, 1, n), np.float32), device=v.device)
    padded = concatenate([v, ones], axis=2)
    out = matmul(matmul(padded, k, trans_b=True), q)
    return typing.cast(Tensor, _ratio(take_slice(out, 0, d, axis=2),
                                      take_slice(out, d, d + 1, axis=2), _EPS))


def _quadratic(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """diffusers' `apply_quadratic_attention`: scores k^T q in the model's dtype, normalised
    over the keys in float32, applied to v in the model's dtype."""
    scores = _as(matmul(k, q, trans_a=True), np.float32)
    total = scores.sum(axis=2, keepdims=True)
    weights = _as(_ratio(scores, total, _EPS), v.dtype)
    return matmul(v, weights)


def multiscale_linear_attention(qkv: Tensor, head_dim: int) -> Tensor:
    """(B, G * 3 * head_dim, N) q, k, v of G groups -> (B, G * head_dim, N) in qkv's dtype.
    diffusers: `SanaMultiscaleAttnProcessor2_0`'s attention between its concatenation of the
    scales and `to_out`."""
    b, channels, n = qkv.shape
    groups = channels // (3 * head_dim)
    linear = n > head_dim  # diffusers' choice
    grouped = _as(qkv, np.float32) if linear else qkv
    q, k, v = _parts(grouped.reshape(b, groups, 3 * head_dim, n), head_dim)
    out = _linear(q, k, v) if linear else _quadratic(q, k, v)
    return _as(out, qkv.dtype).reshape(b, groups * head_dim, n)
