"""softmax and log_softmax along an axis; kernels in shaders/reduction/softmax_rows.wgsl
(contiguous rows, one fused pass) and softmax_apply.wgsl (strided axes, after two
reduce.wgsl passes for the max and the sum of exponentials).

Numerically stable for any input: the row max is subtracted before exp, and f16 input is
computed in f32.
"""

from __future__ import annotations

import builtins
import math
from typing import Any

import numpy as np

from gpucore import Buffer, wgsl_scalar

from . import _reduce as r
from ._broadcast import cached_kernel
from ._tensor import Tensor
from .reduction import _floating, _single_run
from .unary import _tensor

__all__ = ["log_softmax", "record_softmax_rows", "softmax"]


def _softmax(x: Any, axis: Any, log: bool, name: str) -> Tensor:
    x = _floating(_tensor(x))
    _, (outer, length, inner) = _single_run(x, axis, name)
    out = Tensor.empty(x.shape, x.dtype, device=x.device)
    if x.size == 0:
        return out
    t = wgsl_scalar(x.dtype)
    if inner == 1:
        record_softmax_rows(x.buffer, out.buffer, outer, length, log=log)
        return out
    shape = (outer, length, inner)
    peak = r.reduce(x, shape, op=r.MAX, out_dtype=np.float32)
    total = r.reduce(x, shape, op=r.SUM, pre=r.PRE_EXP, center=peak, out_dtype=np.float32)
    kernel = cached_kernel("reduction/softmax_apply", {"T": t}, {"LOG": log})
    kernel.dispatch(kernel.groups_for(x.size), x, peak, total, out, n=x.size, len=length,
                    inner=inner)
    return out


def record_softmax_rows(x: Buffer[Any], out: Buffer[Any], rows: int, length: int, *,
                        log: bool = False) -> None:
    """Record (log_)softmax of `rows` contiguous rows of `length` from buffer x into buffer
    out, each of its own dtype (f32 scores in, f16 probabilities out: attention's wide path);
    no validation. numpy: ``scipy.special.softmax(x.reshape(rows, length), axis=1)``."""
    # Short rows get few lanes each and share a workgroup, rather than idle 256 lanes.
    lanes = builtins.min(256, r.pow2(math.ceil(length / 8)))
    per_group = builtins.min(256 // lanes, r.pow2(rows))
    kernel = cached_kernel("reduction/softmax_rows",
                           {"T": wgsl_scalar(x.dtype), "U": wgsl_scalar(out.dtype)},
                           {"LOG": log, "WX": per_group, "WY": lanes})
    kernel.dispatch(math.ceil(rows / per_group), x, out, rows=rows, len=length)


def softmax(x: Any, axis: Any = -1) -> Tensor:
    """exp(x) / sum(exp(x)) along `axis` (an int, adjacent axes, or None for all),
    same shape and dtype as x (integers give float32). scipy: `scipy.special.softmax`
    (whose default axis is None); torch: `torch.softmax(x, dim)`."""
    return _softmax(x, axis, False, "softmax")


def log_softmax(x: Any, axis: Any = -1) -> Tensor:
    """x - logsumexp(x) along `axis`, without forming softmax (accurate where it
    underflows). scipy: `scipy.special.log_softmax`; torch: `torch.log_softmax`."""
    return _softmax(x, axis, True, "log_softmax")
