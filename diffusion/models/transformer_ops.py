"""Pieces the text and diffusion transformers share (T5, FLUX, SD3): RMS norm, adaLN
modulation, gated residuals, rotary position embeddings, chunks of a modulation vector.

Each is a composition of gpustd ops and small compiled elementwise kernels
(`gpustd.elementwise_kernel`); no WGSL of its own.
"""

from __future__ import annotations

import math
import typing
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, elementwise_kernel, matmul, mean, nn, take_slice

from .layers import Place

__all__ = ["RMSNorm", "cast", "chunks", "gated_add", "head_norm", "modulate", "rms_norm", "rope",
           "rope_heads", "rope_tables"]

_swaps: dict[tuple[int, int, np.dtype, bool], Tensor] = {}


@elementwise_kernel
def _square(x):  # f32: an f16 square overflows at |x| > 256
    return float(x) * float(x)


@elementwise_kernel
def _normalize(x, mean_square, weight, eps):
    return x * (1.0 / math.sqrt(mean_square + eps)) * weight


@elementwise_kernel
def _normalize_plain(x, mean_square, eps):
    return x * (1.0 / math.sqrt(mean_square + eps))


@elementwise_kernel
def _modulate(x, shift, scale):
    return x * (1.0 + scale) + shift


@elementwise_kernel
def _gated_add(residual, gate, y):
    return residual + gate * y


@elementwise_kernel
def _gated_add_clipped(residual, gate, y):
    return min(max(float(residual) + float(gate) * float(y), -65504.0), 65504.0)


@elementwise_kernel
def _rotate(x, swapped, cos, sin):
    return x * cos + swapped * sin


def cast(x: Tensor, dtype: Any) -> Tensor:
    """x itself when it already has `dtype`, else a converted copy (Tensor.astype always
    copies)."""
    return x if x.dtype == np.dtype(dtype) else x.astype(dtype)


def rms_norm(x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    """x [..., D] / sqrt(mean(x^2 over D) + eps) * weight [D] (statistics in float32); the
    result has x's dtype. torch: `nn.RMSNorm(D, eps)(x)`; transformers' `T5LayerNorm`."""
    mean_square = mean(_square(x), axis=-1, keepdims=True)
    if weight is None:
        out = _normalize_plain(x, mean_square, eps)
    else:
        out = _normalize(x, mean_square, weight, eps)
    return cast(typing.cast(Tensor, out), x.dtype)  # the kernels here return one value each


class RMSNorm(nn.Module):
    """RMS normalization over the last dimension with a learned scale `weight` [D] (absent
    with `elementwise_affine=False`). torch: `nn.RMSNorm`; transformers: `T5LayerNorm`."""

    def __init__(self, dim: int, eps: float = 1e-6, *, place: Place,
                 elementwise_affine: bool = True) -> None:
        self.eps = eps
        self.weight = nn.parameter((dim,), **place) if elementwise_affine else None

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)


def head_norm(norm: RMSNorm | None, x: Tensor, heads: int, head_dim: int) -> Tensor:
    """`norm` (over head_dim) applied to each head of x (B, L, heads * head_dim), x itself
    where there is none: the DiTs' q/k norms. torch: `norm(x.unflatten(-1, (heads,
    head_dim))).flatten(-2)`."""
    if norm is None:
        return x
    batch, length, width = x.shape
    return norm(x.reshape(batch, length, heads, head_dim)).reshape(batch, length, width)


def chunks(emb: Tensor, count: int) -> list[Tensor]:
    """(B, count*D) -> `count` tensors (B, 1, D), ready to broadcast over tokens.
    torch: `[c[:, None] for c in emb.chunk(count, dim=1)]`."""
    batch, width = emb.shape
    if width % count:
        raise ValueError(f"a modulation vector of {width} features does not split into "
                         f"{count} equal chunks")
    d = width // count
    return [take_slice(emb, i * d, (i + 1) * d, axis=1).reshape(batch, 1, d)
            for i in range(count)]


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x * (1 + scale) + shift, shift/scale (B, 1, D) over x (B, L, D): adaLN's affine.
    torch: `x * (1 + scale) + shift`."""
    return typing.cast(Tensor, _modulate(x, shift, scale))


def gated_add(residual: Tensor, gate: Tensor, y: Tensor) -> Tensor:
    """residual + gate * y, gate (B, 1, D) over (B, L, D): adaLN-Zero's gated residual. A
    float16 stream is clipped to +-65504 rather than overflowing to inf, as diffusers clips
    FLUX's float16 blocks."""
    if residual.dtype == np.float16:
        return cast(typing.cast(Tensor, _gated_add_clipped(residual, gate, y)), np.float16)
    return typing.cast(Tensor, _gated_add(residual, gate, y))


def rope_heads(config: dict[str, Any]) -> tuple[int, int]:
    """(num_attention_heads, attention_head_dim) of a rotary transformer's config (FLUX.1 and
    .2, Chroma, Qwen-Image and their ControlNets), whose `axes_dims_rope` must fill a head:
    rope_tables gives each axis its features, and together they rotate a whole head."""
    heads, head_dim = config["num_attention_heads"], config["attention_head_dim"]
    if sum(config["axes_dims_rope"]) != head_dim:
        raise ValueError(f"axes_dims_rope {tuple(config['axes_dims_rope'])} must add up to "
                         f"attention_head_dim {head_dim}")
    return heads, head_dim


def rope_tables(ids: np.ndarray, axes_dim: tuple[int, ...], theta: float, *,
                device: Device) -> tuple[Tensor, Tensor]:
    """cos and sin (L, 1, D) of the rotary embedding over several position axes.

    ids: (L, n_axes) positions; axis i gets axes_dim[i] features (D = sum), frequencies
    theta^(-2j/axes_dim[i]) computed in float64 and each repeated twice (pairs rotate
    together). diffusers: `FluxPosEmbed(theta, axes_dim)(ids)` with an added head axis."""
    ids = np.asarray(ids, np.float64)
    if ids.ndim != 2 or ids.shape[1] != len(axes_dim):
        raise ValueError(f"position ids must be (tokens, {len(axes_dim)}), got {ids.shape}")
    angles = []
    for axis, dim in enumerate(axes_dim):
        # diffusers casts positions to float32 first, then computes in float64
        pos = ids[:, axis].astype(np.float32).astype(np.float64)
        freqs = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64)[: dim // 2] / dim)
        angles.append(np.repeat(np.outer(pos, freqs), 2, axis=1))
    angle = np.concatenate(angles, axis=1)
    tokens, width = angle.shape
    cos = np.cos(angle).astype(np.float32).reshape(tokens, 1, width)
    sin = np.sin(angle).astype(np.float32).reshape(tokens, 1, width)
    return asarray(cos, device=device), asarray(sin, device=device)


def _swap_matrix(dim: int, dtype: np.dtype, device: Device, halves: bool = False) -> Tensor:
    """P (D, D) with x @ P = (-x1, x0, -x3, x2, ...): the pair rotation's partner, exact;
    with `halves`, x @ P = (-x[D/2:], x[:D/2]) (transformers' `rotate_half`)."""
    key = (id(device), dim, np.dtype(dtype), halves)
    found = _swaps.get(key)
    if found is None or found.device is not device:
        swap = np.zeros((dim, dim), np.float32)
        if halves:
            first = np.arange(dim // 2)
            swap[first + dim // 2, first] = -1.0
            swap[first, first + dim // 2] = 1.0
        else:
            even = np.arange(0, dim, 2)
            swap[even + 1, even] = -1.0
            swap[even, even + 1] = 1.0
        found = _swaps[key] = asarray(swap, dtype=dtype, device=device)
    return found


def rope(x: Tensor, cos: Tensor, sin: Tensor, heads: int, *, halves: bool = False) -> Tensor:
    """Rotary embedding of x (B, L, H*D) by rope_tables' cos/sin (L, 1, D): each pair
    (x[2i], x[2i+1]) rotated by its angle. diffusers: `apply_rotary_emb(x, (cos, sin),
    sequence_dim=1)` on x viewed (B, L, H, D). With `halves` the pairs are (x[i], x[i+D/2])
    and the tables' angles run over the first half then repeat (the LLMs' layout);
    transformers: `apply_rotary_pos_emb` (`x * cos + rotate_half(x) * sin`)."""
    batch, length, width = x.shape
    dim = width // heads
    if cos.shape != (length, 1, dim):
        raise ValueError(f"rope tables of shape {cos.shape} do not fit {length} tokens of "
                         f"{heads} heads x {dim}")
    # The partner of each element through a tiny GEMM: (B*L*H, D) @ (D, D), a sliver of the
    # projections' cost, and no strided gather kernel to write.
    swapped = matmul(x.reshape(batch * length * heads, dim),
                     _swap_matrix(dim, x.dtype, x.device, halves))
    out = _rotate(x.reshape(batch, length, heads, dim), swapped.reshape(batch, length, heads, dim),
                  cos, sin)
    return cast(typing.cast(Tensor, out), x.dtype).reshape(batch, length, width)

