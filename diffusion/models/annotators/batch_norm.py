"""Batch norms of the annotators' networks folded into the convolutions before them, once when
the weights are read (in eval mode a batch norm is a per-channel scale and shift)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor

__all__ = ["folded", "missing_keys"]

_NORM_KEYS = ("weight", "bias", "running_mean", "running_var")


def missing_keys(state: Mapping[str, Any], conv: str, norm: str | None) -> list[str]:
    """The tensors of conv (+ norm) that `state` lacks."""
    needed = [f"{conv}.weight"] + [f"{norm}.{key}" for key in _NORM_KEYS if norm]
    return [key for key in needed if key not in state]


def folded(state: Mapping[str, Any], conv: str, norm: str | None, *, eps: float = 1e-5,
           rows: slice = slice(None), dtype: Any = np.float32,
           device: Device | None = None) -> tuple[Tensor, Tensor]:
    """conv's weight and bias (zero if it has none) with the eval-mode batch norm `norm`
    after it folded in (computed in float64), its output channels `rows` only. torch:
    `bn(conv(x))` == `F.conv2d(x, weight, bias)`."""
    weight = np.asarray(state[f"{conv}.weight"], np.float64)
    bias = np.asarray(state.get(f"{conv}.bias", np.zeros(weight.shape[0])), np.float64)
    if norm is not None:
        scale = np.asarray(state[f"{norm}.weight"], np.float64) / np.sqrt(
            np.asarray(state[f"{norm}.running_var"], np.float64) + eps)
        weight = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
        bias = (bias - np.asarray(state[f"{norm}.running_mean"], np.float64)) * scale + \
            np.asarray(state[f"{norm}.bias"], np.float64)
    if weight.ndim == 3:  # a Conv1d of kernel 1: the same as a 1x1 Conv2d
        weight = weight[..., None]
    return (Tensor.from_numpy(np.ascontiguousarray(weight[rows], np.float32), dtype=dtype,
                              device=device),
            Tensor.from_numpy(np.ascontiguousarray(bias[rows], np.float32), dtype=dtype,
                              device=device))
