"""LTX-2's rotary positions (diffusers' `LTX2AudioVideoRotaryPosEmbed`): each video token's
[start, end) span in pixel frames, rows and columns (frames in seconds), each audio token's in
seconds, their midpoints as fractions of the model's base sizes, and the cos/sin tables of
those fractions for the whole attention width (not one head's: each head rotates by its own
frequencies).

Two layouts, as the config's `rope_type` says: "interleaved" turns pairs (x[2i], x[2i+1]) of
the whole width; "split" turns, within each head, (x[i], x[i + D/2]). The tables are made on
the host in float32 step by step as diffusers makes them (the angles reach theta * pi / 2
radians, where float32's rounding of the angle itself shows), then uploaded once per size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, nn

from .transformer_ops import RMSNorm

__all__ = ["Rotary", "audio_coords", "norm_rope", "rope_tables", "video_coords"]

_F32 = np.float32


@dataclass(frozen=True)
class Rotary:
    """cos, sin float32 tables on the device; `heads` None: interleaved pairs over the whole
    width, tables (L, 1, width); an int: "split" halves of each of `heads` head groups,
    tables (L * heads, 1, width / heads)."""

    cos: Tensor
    sin: Tensor
    heads: int | None


def video_coords(frames: int, height: int, width: int, *, patch: int, patch_t: int,
                 scale_factors: tuple[int, int, int], causal_offset: int, fps: float
                 ) -> np.ndarray:
    """(3, L, 2) float32 [start, end) of each latent patch (frame-major, then row-major) in
    pixel space: frames in seconds, their start moved back by the VAE's temporal stride less
    `causal_offset` (the first latent frame holds one picture) and kept >= 0. diffusers:
    `LTX2AudioVideoRotaryPosEmbed.prepare_video_coords(...)[0]`."""
    axes = [np.arange(0, n, step, dtype=_F32) for n, step in
            ((frames, patch_t), (height, patch), (width, patch))]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=0).reshape(3, -1)
    sizes = np.asarray((patch_t, patch, patch), _F32)[:, None]
    pixel = np.stack([grid, grid + sizes], axis=-1) * np.asarray(scale_factors, _F32)[:, None,
                                                                                      None]
    start = pixel[0] + _F32(causal_offset) - _F32(scale_factors[0])
    pixel[0] = np.maximum(start, _F32(0)) / _F32(fps)
    return pixel


def audio_coords(frames: int, *, patch_t: int, scale_factor: int, causal_offset: int,
                 hop_length: int, sampling_rate: int) -> np.ndarray:
    """(1, L, 2) float32 [start, end) in seconds of each audio latent frame (its mel frames,
    the first one's start moved back as video_coords' frames). diffusers:
    `LTX2AudioVideoRotaryPosEmbed.prepare_audio_coords(...)[0]`."""
    steps = np.arange(0, frames, patch_t, dtype=_F32)

    def seconds(mel_index: np.ndarray) -> np.ndarray:
        mel = mel_index * _F32(scale_factor) + _F32(causal_offset) - _F32(scale_factor)
        return np.maximum(mel, _F32(0)) * _F32(hop_length) / _F32(sampling_rate)

    return np.stack([seconds(steps), seconds(steps + _F32(patch_t))], axis=-1)[None]


def rope_tables(coords: np.ndarray, max_positions: tuple[float, ...], dim: int, *,
                theta: float, split_heads: int | None, device: Device,
                double_precision: bool = True) -> Rotary:
    """The Rotary of coords (axes, L, 2) over `dim` features: each axis's span midpoint over
    its max position, mapped to [-1, 1], times dim // (2 * axes) frequencies theta^j
    (linspace 0..1) * pi / 2, the axes interleaved per frequency; features left over are
    unrotated (cos 1, sin 0) at the front. `split_heads`: the "split" layout of that many
    heads, None: "interleaved". diffusers: `LTX2AudioVideoRotaryPosEmbed.forward(coords)`."""
    axes = coords.shape[0]
    middle = (coords[..., 0] + coords[..., 1]) / _F32(2.0)
    grid = np.stack([middle[i] / _F32(max_positions[i]) for i in range(axes)], axis=-1)
    count = dim // (2 * axes)
    exponents = np.linspace(0.0, 1.0, count, dtype=np.float64 if double_precision else _F32)
    freqs = (np.power(theta, exponents) * np.pi / 2.0).astype(_F32)
    # (L, axes, F) -> (L, F, axes): one frequency's angle on each axis side by side
    angles = ((grid[..., None] * _F32(2) - _F32(1)) * freqs).transpose(0, 2, 1)
    angles = angles.reshape(angles.shape[0], -1)
    cos, sin = np.cos(angles.astype(np.float64)), np.sin(angles.astype(np.float64))
    length = angles.shape[0]
    if split_heads is None:
        cos, sin = np.repeat(cos, 2, axis=1), np.repeat(sin, 2, axis=1)
        pad = dim - cos.shape[1]
    else:
        pad = dim // 2 - cos.shape[1]
    cos = np.concatenate([np.ones((length, pad)), cos], axis=1)
    sin = np.concatenate([np.zeros((length, pad)), sin], axis=1)
    if split_heads is not None:  # each head's half angles, twice: rope's `halves` tables
        cos = np.tile(cos.reshape(length * split_heads, 1, -1), (1, 1, 2))
        sin = np.tile(sin.reshape(length * split_heads, 1, -1), (1, 1, 2))
    shape = (-1, 1, cos.shape[-1])
    return Rotary(asarray(cos.astype(_F32).reshape(shape), device=device),
                  asarray(sin.astype(_F32).reshape(shape), device=device), split_heads)


def norm_rope(norm: RMSNorm, x: Tensor, rotary: Rotary | None) -> Tensor:
    """RMS norm of x (B, L, width) across all heads (LTX-2's q/k norm), then the rotation:
    one pass for "interleaved" tables (one rotation over the whole width), two for "split"
    (each head group's rows turned as rows of their own). torch: `apply_*_rotary_emb(
    nn.RMSNorm(width)(x), (cos, sin))`."""
    if rotary is None or rotary.heads is None:
        tables = None if rotary is None else (rotary.cos, rotary.sin)
        return nn.rms_norm_rope(x, norm.weight, tables, eps=norm.eps)
    y = nn.rms_norm_rope(x, norm.weight, eps=norm.eps)
    batch, length, width = y.shape
    turned = nn.rms_norm_rope(y.reshape(batch, length * rotary.heads, width // rotary.heads),
                              None, (rotary.cos, rotary.sin), eps=None, halves=True)
    return turned.reshape(batch, length, width)
