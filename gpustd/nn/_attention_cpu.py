"""Attention on CPU adapters: shaders/nn/attention_cpu.wgsl, each invocation 4 query rows with
their head dims in registers walking the keys itself, in place of attention.wgsl's workgroup
tiles and barriers (llvmpipe pays for a workgroup-memory read as for a storage one, lane by
lane, and for a barrier once a group of eight; bench/NOTES.md, "A direct attention for CPU
adapters")."""

from __future__ import annotations

import math
from typing import Any

from .._tensor import Tensor
from ..gemm.cpu import LANES, direct_kernel

__all__ = ["DIRECT", "MAX_D", "applies", "record_attention_cpu"]

# False: CPU adapters take attention.wgsl's plans as GPUs do (the tests of those plans run on
# lavapipe through it, and bench/ compares the two).
DIRECT = True
MAX_D = 32  # the head dims one invocation holds (8 vec4 slots)
_ROWS = 4  # query rows an invocation


def applies(d: int, device: Any) -> bool:
    """Whether head dim `d` runs here: a CPU adapter, d up to MAX_D."""
    return DIRECT and device.info.type == "cpu" and d <= MAX_D


def record_attention_cpu(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, out: Tensor, *,
                         shape: tuple[int, int, int, int, int], scale: float, kind: int,
                         causal: bool, strides: tuple[Any, ...]) -> None:
    """Record out = softmax(scale q k^T + mask) v (`shape` = (B, H, Lq, Lk, D); `strides` the
    (batch, head, row) element strides of q, k, v, out and the mask's four; `scale` with
    log2(e) folded in; `kind` the mask's: 0 none, 1 additive, 2 boolean); no validation
    (attention() has done it)."""
    b, h, lq, lk, d = shape
    q_s, k_s, v_s, o_s, m_s = strides
    kernel = direct_kernel(
        "nn/attention_cpu", {"T": "f16" if q.dtype.itemsize == 2 else "f32",
                             "M": "u32" if kind == 2 else "f32"},
        {"V": ("VEC", (d, *q_s, *k_s, *v_s))}, MASK=kind)
    kernel.dispatch(
        (math.ceil(lq / (LANES * _ROWS)), b * h), q, k, v, mask, out,
        lq=lq, lk=lk, heads=h, causal=int(causal), scale=scale, d=d, dv4=math.ceil(d / 4),
        q_sb=q_s[0], q_sh=q_s[1], q_sl=q_s[2], k_sb=k_s[0], k_sh=k_s[1], k_sl=k_s[2],
        v_sb=v_s[0], v_sh=v_s[1], v_sl=v_s[2], o_sb=o_s[0], o_sh=o_s[1], o_sl=o_s[2],
        m_sb=m_s[0], m_sh=m_s[1], m_sq=m_s[2], m_sk=m_s[3])
