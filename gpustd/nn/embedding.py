"""Lookups: timestep_embedding (diffusers' sinusoidal embedding) and embedding (tables)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Device, as_dtype, default_device

from .._tensor import Tensor
from ._util import FLOATS, check_float, kernel

__all__ = ["embedding", "timestep_embedding"]


def _frequencies(half: int, shift: float, max_period: float, device: Device) -> Tensor:
    """exp(-ln(max_period) * j / (half - shift)) in float32 op by op, as diffusers does."""
    def make() -> Tensor:
        exponent = np.arange(half, dtype=np.float32) * np.float32(-math.log(max_period))
        exponent = exponent / np.float32(half - shift)
        table = np.exp(exponent.astype(np.float64)).astype(np.float32)
        return Tensor.from_numpy(table, device=device, read_only=True)

    return device.keep(("timestep frequencies", half, float(shift), float(max_period)), make)


def timestep_embedding(timesteps: Any, dim: int, flip_sin_to_cos: bool = False,
                       downscale_freq_shift: float = 1, scale: float = 1,
                       max_period: float = 10000, *, dtype: Any = np.float32,
                       device: Device | None = None) -> Tensor:
    """Sinusoidal embeddings [B, dim] of B timesteps (Tensor float32 or array-like).

    Frequencies exp(-ln(max_period) * j / (dim//2 - downscale_freq_shift)); rows are
    [sin, cos] of scale * t * freq ([cos, sin] with flip_sin_to_cos), zero-padded when dim
    is odd. diffusers: `get_timestep_embedding(timesteps, dim, flip_sin_to_cos,
    downscale_freq_shift, scale, max_period)`.
    """
    op = "timestep_embedding"
    if not isinstance(timesteps, Tensor):
        timesteps = Tensor.from_numpy(np.asarray(timesteps, dtype=np.float32).reshape(-1),
                                      device=device or default_device())
    elif timesteps.dtype != np.float32:
        raise TypeError(f"{op}: timesteps must be float32, got {timesteps.dtype}; "
                        "use .astype(np.float32)")
    if timesteps.ndim != 1:
        raise ValueError(f"{op}: timesteps must be 1-D, got shape {timesteps.shape}")
    if int(dim) != dim or dim < 1:
        raise ValueError(f"{op}: dim must be a positive int, got {dim!r}")
    half = dim // 2
    if half and half == downscale_freq_shift:
        raise ValueError(f"{op}: dim // 2 == downscale_freq_shift divides by zero")
    dtype = as_dtype(dtype)
    if dtype not in FLOATS:
        raise TypeError(f"{op}: dtype must be float32 or float16, got {dtype}")
    dev = timesteps.device
    out = Tensor.empty((timesteps.shape[0], dim), dtype, device=dev)
    freq = _frequencies(max(half, 1), downscale_freq_shift, max_period, dev)
    k = kernel("timestep_embedding", {"T": out.dtype}, FLIP=int(bool(flip_sin_to_cos)))
    k.dispatch(k.groups_for(out.size), timesteps, freq, out, n=out.size, dim=dim, half=half,
               scale=scale)
    return out


def embedding(ids: Any, table: Tensor) -> Tensor:
    """Rows of `table` [V, D] picked by integer `ids` (any shape) -> ids.shape + (D,).

    ids: an int32 Tensor, or array-like of ints (checked to lie in [0, V)). Rows of
    out-of-range ids in a Tensor read as zeros. A table larger than one storage binding may
    be (SD's 49408 x 768 float32 CLIP table is 145 MiB; lavapipe and WebGPU's defaults bind
    128) is read by buffer copies, a row per id. torch: `F.embedding(ids, table)`.
    """
    op = "embedding"
    check_float(table, "table", op, ndim=2)
    vocab, d = table.shape
    if not isinstance(ids, Tensor):
        host = np.asarray(ids)
        if host.dtype.kind not in "iu":
            raise TypeError(f"{op}: ids must be integers, got {host.dtype}")
        if host.size and (host.min() < 0 or host.max() >= vocab):
            raise ValueError(f"{op}: ids must lie in [0, {vocab}), got range "
                             f"[{host.min()}, {host.max()}]")
        ids = Tensor.from_numpy(host.astype(np.int32), device=table.device)
    elif ids.dtype != np.int32:
        raise TypeError(f"{op}: ids must be int32, got {ids.dtype}")
    if table.nbytes > table.device.limits["max-storage-buffer-binding-size"]:
        return _rows_by_copies(ids, table)
    out = Tensor.empty((*ids.shape, d), table.dtype, device=table.device)
    if out.size:
        k = kernel("embedding", {"T": table.dtype})
        k.dispatch(k.groups_for(out.size), ids, table, out, n=out.size, d=d, vocab=vocab)
    return out


def _rows_by_copies(ids: Tensor, table: Tensor) -> Tensor:
    """embedding's rows as one buffer copy each (no binding holds the table): the ids read
    back to the host (a prompt's few hundred), rows of ids outside the table left zero."""
    vocab, d = table.shape
    row = d * table.dtype.itemsize
    if row % 4:  # WebGPU copies whole 4-byte words
        raise ValueError(f"embedding: a {table.nbytes:,}-byte table is larger than one storage "
                         f"binding of this device, and its {row}-byte rows are no whole words "
                         "to copy; pick an adapter with larger bindings")
    out = Tensor.zeros((*ids.shape, d), table.dtype, device=table.device)
    for i, index in enumerate(ids.numpy().reshape(-1).tolist()):
        if 0 <= index < vocab:
            table.device.record_copy(table.buffer.wgpu, index * row, out.buffer.wgpu, i * row,
                                     row)
    return out
