"""Pieces the text and diffusion transformers share (T5, FLUX, SD3): RMS norm, adaLN
modulation, gated residuals, rotary position embeddings, chunks of a modulation vector.

Each is a composition of gpustd ops (the norms and rotations: gpustd.nn.rms_norm_rope) and
small compiled elementwise kernels (`gpustd.elementwise_kernel`); no WGSL of its own.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, elementwise_kernel, empty, nn, take_slice

from .layers import Place

__all__ = ["Modulation", "RMSNorm", "cast", "chunks", "forget_kept", "gated_add", "gated_linear",
           "head_norm", "joint_norm_rope", "kept", "modulate", "norm_modulate", "norm_rope",
           "rms_norm", "rope", "rope_heads", "rope_tables"]

_Kept = TypeVar("_Kept")


@elementwise_kernel
def _modulate(x, shift, scale):
    return x * (1.0 + scale) + shift


@elementwise_kernel
def _gated_add(residual, gate, y):
    return residual + gate * y


@elementwise_kernel
def _gated_add_clipped(residual, gate, y):  # float16 out, no cast pass after it
    out = float(residual) + float(gate) * float(y)  # NaN kept (torch's clamp keeps it)
    return np.float16(out if math.isnan(out) else min(max(out, -65504.0), 65504.0))


def cast(x: Tensor, dtype: Any) -> Tensor:
    """x itself when it already has `dtype`, else a converted copy (Tensor.astype always
    copies)."""
    return x if x.dtype == np.dtype(dtype) else x.astype(dtype)


def rms_norm(x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    """x [..., D] / sqrt(mean(x^2 over D) + eps) * weight [D] (statistics in float32); the
    result has x's dtype. torch: `nn.RMSNorm(D, eps)(x)`; transformers' `T5LayerNorm`."""
    return nn.rms_norm_rope(x, weight, eps=eps)


class RMSNorm(nn.Module):
    """RMS normalization over the last dimension with a learned scale `weight` [D] (absent
    with `elementwise_affine=False`). torch: `nn.RMSNorm`; transformers: `T5LayerNorm`.
    `zero_centred`: the scale is 1 + weight (Gemma's norms store its offset from 1), the
    weight float32 whatever the model's dtype (float16 would round the offset before the
    + 1) and the 1 added as the kernel reads it; transformers: `Gemma3RMSNorm`."""

    def __init__(self, dim: int, eps: float = 1e-6, *, place: Place,
                 elementwise_affine: bool = True, zero_centred: bool = False) -> None:
        self.eps, self.zero_centred = eps, zero_centred
        where = {**place, "dtype": np.float32} if zero_centred else place
        self.weight = nn.parameter((dim,), **where) if elementwise_affine else None

    def forward(self, x: Tensor) -> Tensor:
        return nn.rms_norm_rope(x, self.weight, eps=self.eps, zero_centred=self.zero_centred)


def head_norm(norm: RMSNorm | None, x: Tensor, heads: int, head_dim: int) -> Tensor:
    """`norm` (over head_dim) applied to each head of x (B, L, heads * head_dim), x itself
    where there is none: the DiTs' q/k norms. torch: `norm(x.unflatten(-1, (heads,
    head_dim))).flatten(-2)`."""
    if norm is None:
        return x
    return nn.rms_norm_rope(x, norm.weight, heads=heads, eps=norm.eps,
                            zero_centred=getattr(norm, "zero_centred", False))


def norm_rope(norm: RMSNorm | None, x: Tensor, rotary: tuple[Tensor, Tensor] | None,
              heads: int, *, out: Tensor | None = None, start: int = 0,
              halves: bool = False) -> Tensor:
    """head_norm then rope (`halves` as rope's) in one pass, either absent where there is no
    `norm` or no `rotary`; written into `out` at token `start` where given (a joint text +
    image sequence filled part by part; the tables then cover all of out's tokens).
    torch: `apply_rotary_emb(norm(x.unflatten(-1, (heads, D))).flatten(-2), (cos, sin))`."""
    if norm is None and rotary is None and out is None:
        return x
    return nn.rms_norm_rope(x, norm.weight if norm is not None else None, rotary, heads=heads,
                            eps=norm.eps if norm is not None else None, halves=halves,
                            out=out, start=start,
                            zero_centred=getattr(norm, "zero_centred", False))


def joint_norm_rope(parts: list[tuple[RMSNorm | None, Tensor]],
                    rotary: tuple[Tensor, Tensor] | None, heads: int) -> Tensor:
    """norm_rope of each (norm, x (B, Li, H*D)) written one after another along the tokens,
    the tables covering them all: a joint text + image q or k without a concatenation pass.
    torch: `torch.cat([apply_rotary_emb(norm(x)...) ...], dim=1)` as norm_rope's."""
    first = parts[0][1]
    total = sum(x.shape[1] for _, x in parts)
    out = empty((first.shape[0], total, first.shape[2]), first.dtype, device=first.device)
    start = 0
    for norm, x in parts:
        norm_rope(norm, x, rotary, heads, out=out, start=start)
        start += x.shape[1]
    return out


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


class Modulation:
    """adaLN's `count` modulation vectors left in the one linear output emb (B, count*D) they
    come from: `norm` reads its shift and scale there in place (nn.layer_norm_modulate's
    columns), and `[i]` is chunk i as chunks gives it (B, 1, D), copied once when a consumer
    needs its own tensor (a gate). torch: `emb.chunk(count, dim=1)[i][:, None]`."""

    def __init__(self, emb: Tensor, count: int) -> None:
        batch, width = emb.shape
        if width % count:
            raise ValueError(f"a modulation vector of {width} features does not split into "
                             f"{count} equal chunks")
        self.count, self.width = count, width // count
        self.whole = emb.reshape(batch, 1, width)
        self._chunks: dict[int, Tensor] = {}

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Tensor:
        if not -self.count <= index < self.count:
            raise IndexError(f"modulation chunk {index} of {self.count}")
        index %= self.count
        if index not in self._chunks:
            d = self.width
            self._chunks[index] = take_slice(self.whole, index * d, (index + 1) * d, axis=2)
        return self._chunks[index]

    def gated_linear(self, gate: int, residual: Tensor, layer: nn.Linear, h: Tensor) -> Tensor:
        """gated_linear(residual, self[gate], layer, h), the fused GEMM reading the gate in
        place (gate_at: no copy of it); the two passes take the chunk."""
        whole, d = self.whole, self.width
        if residual.ndim == 3 and residual.shape[0] == whole.shape[0] and residual.shape[2] == d:
            fused = _fused_gated(residual, whole, layer, h, gate % self.count * d)
            if fused is not None:
                return fused
        return gated_add(residual, self[gate], layer(h))

    def norm(self, x: Tensor, shift: int, scale: int, eps: float = 1e-6) -> Tensor:
        """norm_modulate(x, self[shift], self[scale]), reading both chunks in place where
        x (B, L, D) has the modulation's dtype and width (one pass, no copies)."""
        whole, d = self.whole, self.width
        if x.ndim == 3 and x.dtype == whole.dtype and x.shape[2] == d \
                and x.shape[0] == whole.shape[0]:
            return nn.layer_norm_modulate(x, whole, whole, eps=eps, shift_at=shift % self.count
                                          * d, scale_at=scale % self.count * d)
        return norm_modulate(x, self[shift], self[scale], eps)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x * (1 + scale) + shift, shift/scale (B, 1, D) over x (B, L, D): adaLN's affine.
    torch: `x * (1 + scale) + shift`."""
    return typing.cast(Tensor, _modulate(x, shift, scale))


def norm_modulate(x: Tensor, shift: Tensor, scale: Tensor, eps: float = 1e-6) -> Tensor:
    """modulate(layer_norm(x)) for the transformers' parameterless LayerNorm (eps 1e-6): one
    pass (nn.layer_norm_modulate, the two passes' bits) where shift and scale are (B, 1, D)
    of x's dtype, else the two passes. torch: `F.layer_norm(x, (D,), eps=eps) * (1 + scale)
    + shift`."""
    if (x.ndim == 3 and shift.dtype == scale.dtype == x.dtype
            and shift.shape == scale.shape == (x.shape[0], 1, x.shape[2])):
        return nn.layer_norm_modulate(x, shift, scale, eps=eps)
    return modulate(nn.layer_norm(x, None, None, eps=eps), shift, scale)


def gated_add(residual: Tensor, gate: Tensor, y: Tensor) -> Tensor:
    """residual + gate * y, gate (B, 1, D) over (B, L, D): adaLN-Zero's gated residual. A
    float16 stream is clipped to +-65504 rather than overflowing to inf, as diffusers clips
    FLUX's float16 blocks."""
    if residual.dtype == np.float16:
        return typing.cast(Tensor, _gated_add_clipped(residual, gate, y))
    return typing.cast(Tensor, _gated_add(residual, gate, y))


def gated_linear(residual: Tensor, gate: Tensor, layer: nn.Linear, h: Tensor) -> Tensor:
    """gated_add(residual, gate, layer(h)); for a float16 stream and a plain layer
    (nn.Linear.plain) the gate and the residual in the GEMM's epilogue where the matrix units
    take the shape (nn.linear_gated_add: one pass over the stream fewer, the two passes'
    values within an f16 ulp)."""
    if gate.shape == (residual.shape[0], 1, residual.shape[-1]):
        fused = _fused_gated(residual, gate, layer, h, 0)
        if fused is not None:
            return fused
    return gated_add(residual, gate, layer(h))


def _fused_gated(residual: Tensor, gate: Tensor, layer: nn.Linear, h: Tensor,
                 gate_at: int) -> Tensor | None:
    """nn.linear_gated_add of a float16 stream through a plain layer, gate (B, 1, W) from
    column gate_at; None where it does not apply, for the caller's two passes."""
    if (residual.dtype == gate.dtype == h.dtype == np.float16 and h.ndim == 3
            and layer.plain()):
        return nn.linear_gated_add(h, layer.weight, layer.bias, residual, gate, gate_at=gate_at)
    return None


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


def kept(store: dict[Any, Any], key: Hashable, make: Callable[[], _Kept], count: int = 4
         ) -> _Kept:
    """store[key], made by `make()` the first time it is asked for; the `count` keys asked
    for last stay in `store`, older ones are dropped. A model's per-size constants (rotary
    tables) kept on the device between calls, instead of rebuilt on the host and uploaded
    (each upload a submit) every step."""
    value = store.pop(key, None)
    if value is None:
        value = make()
    store[key] = value
    for old in list(store)[:-count]:
        del store[old]
    return typing.cast(_Kept, value)


def forget_kept(module: nn.Module) -> None:
    """Drop what `kept` holds anywhere in `module` (its and its children's `_tables`): a
    memory mode's budget counts them, so the flow memory plan drops them once the networks
    that use them are done with a picture (they are made again at the next one)."""
    stack, seen = [module], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        tables = vars(current).get("_tables")
        if isinstance(tables, dict):
            tables.clear()
        for value in vars(current).values():
            if isinstance(value, nn.ModuleList):
                stack.extend(value)
            if isinstance(value, nn.Module):
                stack.append(value)


def rope(x: Tensor, cos: Tensor, sin: Tensor, heads: int, *, halves: bool = False) -> Tensor:
    """Rotary embedding of x (B, L, H*D) by rope_tables' cos/sin (L, 1, D): each pair
    (x[2i], x[2i+1]) rotated by its angle. diffusers: `apply_rotary_emb(x, (cos, sin),
    sequence_dim=1)` on x viewed (B, L, H, D). With `halves` the pairs are (x[i], x[i+D/2])
    and the tables' angles run over the first half then repeat (the LLMs' layout);
    transformers: `apply_rotary_pos_emb` (`x * cos + rotate_half(x) * sin`)."""
    _, length, width = x.shape
    dim = width // heads
    if cos.shape != (length, 1, dim):
        raise ValueError(f"rope tables of shape {cos.shape} do not fit {length} tokens of "
                         f"{heads} heads x {dim}")
    return nn.rms_norm_rope(x, None, (cos, sin), heads=heads, eps=None, halves=halves)

