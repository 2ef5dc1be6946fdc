"""Scaled dot-product attention as one flash-attention kernel: shaders/nn/attention.wgsl.

The Lq x Lk score matrix is never stored: each workgroup streams key/value tiles through
workgroup memory with an online softmax, so memory traffic and allocation are those of q, k,
v and the output (plus the mask, when one is given).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gpucore import FeatureError, Kernel

from .._tensor import Tensor

__all__ = ["attention"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float16))
_LOG2E = 1.4426950408889634
_MAX_CHUNK4 = 16  # head-dim vec4s staged per chunk (64 dims)
_kernels: dict[tuple, Kernel] = {}
_plans: dict[tuple[int, ...], Plan] = {}
_dummies: dict[int, Tensor] = {}


@dataclass(frozen=True)
class Plan:
    """Tile shape of one kernel specialization (the WGSL override constants)."""

    # Field names are the shader's override names.
    D: int
    DC4: int
    NCH: int
    BQ: int
    BK: int
    WG: int
    TQ: int
    TK: int
    TQO: int

    def workgroup_bytes(self) -> int:
        dc4p, bk4p = self.DC4 | 1, (self.BK // 4) | 1
        cs = self.WG * self.TQ // self.BQ
        return 16 * (self.BQ * dc4p + self.BK * dc4p + self.BQ * bk4p) + 4 * self.BQ * (cs + 2)


def _chunks(d: int) -> tuple[int, int]:
    """(vec4s per chunk, chunks): the fewest chunks of <= 64 dims wasting little padding."""
    d4 = math.ceil(d / 4)
    for nch in range(math.ceil(d4 / _MAX_CHUNK4), d4 + 1):
        dc4 = math.ceil(d4 / nch)
        if dc4 * nch - d4 <= d4 // 8:
            return dc4, nch
    return d4, 1  # unreachable: nch == d4 wastes nothing


def _candidates(d: int, budget: int, max_invocations: int) -> list[Plan]:
    """Every tile plan for head dim `d` that the shader's invariants and the workgroup
    memory allow: RS*CS == RO*DC4 == WG, TQ*TK <= 16, NCH*TQO <= 32, BK a multiple of 4."""
    dc4, nch = _chunks(d)
    found = []
    for bq in (128, 64, 32, 16):
        for tqo in (1, 2, 4, 8):
            wg = bq // tqo * dc4
            if bq % tqo or wg > min(256, max_invocations) or nch * tqo > 32:
                continue
            for tq in (1, 2, 4, 8):
                for tk in (1, 2, 4):
                    rs = bq // tq
                    if bq % tq or wg % rs or tq * tk > 16:
                        continue
                    bk = wg // rs * tk
                    plan = Plan(d, dc4, nch, bq, bk, wg, tq, tk, tqo)
                    if bk % 4 == 0 and bk <= 128 and plan.workgroup_bytes() <= budget:
                        found.append(plan)
    return found


def _cost(plan: Plan, rows: int, batch_heads: int) -> float:
    """Modelled time (arbitrary units) for `batch_heads` heads of `rows` queries per key.

    Per (query, key) pair: 8 FMAs per vec4 of head dim, the workgroup-memory vec4 loads the
    register blocks leave (weighted 4: shared memory issues far slower than FMAs), and each
    tile's barriers and softmax shared by BQ*BK pairs. Grids below ~2 workgroups per SM of a
    large GPU leave SMs idle, so time scales with 1 / min(workgroups, 264)."""
    d4p = plan.DC4 * plan.NCH
    loads = d4p * (1 / plan.TK + 1 / plan.TQ + 1 / 4 + 1 / plan.TQO)
    cs = plan.WG * plan.TQ // plan.BQ
    per_tile = (4 * plan.NCH + 2) * 32 + plan.TQ * plan.TK * 12 + 2 * cs
    per_tile += 8 * plan.BK * d4p / plan.WG * (1 + (plan.NCH > 1) * plan.BQ / plan.BK)
    per_pair = 8 * d4p + 4 * loads + plan.WG * per_tile / (plan.BQ * plan.BK)
    per_pair *= 1 + 16 / plan.WG  # few warps per workgroup cap the warps per SM
    groups = math.ceil(rows / plan.BQ) * batch_heads
    return per_pair * groups * plan.BQ / min(groups, 264)


def plan_for(d: int, device: Any, rows: int = 4096, batch_heads: int = 1) -> Plan:
    """The tile plan (cached) for head dim `d`, `rows` queries per head and `batch_heads`
    heads on `device`: the cheapest under `_cost` that fits its workgroup memory."""
    budget = device.limits["max-compute-workgroup-storage-size"]
    invocations = device.limits["max-compute-invocations-per-workgroup"]
    key = (d, budget, invocations, rows, batch_heads)
    if key not in _plans:
        found = _candidates(d, budget, invocations)
        if not found:
            raise ValueError(f"attention: head dim {d} needs more workgroup memory than this "
                             f"device's {budget} bytes")
        _plans[key] = min(found, key=lambda p: _cost(p, rows, batch_heads))
    return _plans[key]


def _kernel(dtype: np.dtype, mask_kind: int, plan: Plan) -> Kernel:
    key = (dtype, mask_kind, plan)
    found = _kernels.get(key)
    if found is None:
        types = {"T": "f16" if dtype == np.float16 else "f32",
                 "M": "u32" if mask_kind == 2 else "f32"}
        found = _kernels[key] = Kernel.load(
            "nn/attention", types=types, constants={**asdict(plan), "MASK": mask_kind})
    return found


def _check(x: Any, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"attention: {name} must be a gpustd Tensor, got {type(x).__name__}; "
                        "upload with gpustd.asarray(...)")
    if x.dtype not in _FLOATS:
        raise TypeError(f"attention: {name} has dtype {x.dtype}; use float32 or float16")
    if x.dtype == np.float16 and not x.device.has_f16:
        raise FeatureError("shader-f16", "attention on float16", x.device.info.label)
    return x


def _layout(x: Tensor, name: str, heads: int | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """((B, H, L, D), (batch, head, row) element strides) of x."""
    if heads is None:
        if x.ndim != 4:
            raise ValueError(f"attention: {name} must be (B, H, L, D), got shape {x.shape}; "
                             "pass heads= for (B, L, H*D)")
        b, h, length, d = x.shape
        return (b, h, length, d), (h * length * d, length * d, d)
    if x.ndim != 3 or x.shape[2] % heads:
        raise ValueError(f"attention: with heads={heads}, {name} must be (B, L, H*D) with the "
                         f"last dim divisible by {heads}, got shape {x.shape}")
    b, length, hd = x.shape
    return (b, heads, length, hd // heads), (length * hd, hd // heads, hd)


def _mask(mask: Any, shape: tuple[int, int, int, int], device: Any) -> tuple[Tensor, int, list]:
    """The mask on the GPU, its kind (1 additive f32, 2 boolean u32) and its 4 strides
    against (B, H, Lq, Lk) (0 along broadcast dims)."""
    if isinstance(mask, Tensor):
        if mask.device is not device:
            raise ValueError(f"attention: mask is on {mask.device.name}, q on {device.name}; "
                             "move it with .to(device)")
        if mask.dtype == np.float16:
            mask = mask.astype(np.float32)
        if mask.dtype not in (np.dtype(np.float32), np.dtype(np.uint32)):
            raise TypeError(f"attention: mask has dtype {mask.dtype}; use float32 (added to "
                            "the scores) or uint32/bool (nonzero = keep)")
        kind = 1 if mask.dtype == np.float32 else 2
    else:
        array = np.asarray(mask)
        if array.dtype == np.bool_:
            array = np.where(array, np.float32(0.0), np.float32(-np.inf))
        elif array.dtype.kind != "f":
            raise TypeError(f"attention: mask has dtype {array.dtype}; use a float (added to "
                            "the scores) or bool (True = keep) mask")
        mask, kind = Tensor.from_numpy(array.astype(np.float32), device=device), 1
    if mask.ndim > 4:
        raise ValueError(f"attention: mask shape {mask.shape} has more than 4 dims")
    mshape = (1,) * (4 - mask.ndim) + mask.shape
    if any(m not in (1, s) for m, s in zip(mshape, shape)):
        raise ValueError(f"attention: mask shape {mask.shape} does not broadcast to "
                         f"(B, H, Lq, Lk) = {shape}")
    strides = [math.prod(mshape[i + 1:]) if mshape[i] != 1 else 0 for i in range(4)]
    return mask, kind, strides


def _dummy(device: Any) -> Tensor:
    found = _dummies.get(id(device))
    if found is None or found.device is not device:
        found = _dummies[id(device)] = Tensor.from_numpy(np.zeros(1, np.float32), device=device)
    return found


def attention(q: Tensor, k: Tensor, v: Tensor, *, mask: Any = None, causal: bool = False,
              scale: float | None = None, heads: int | None = None) -> Tensor:
    """softmax(q @ k^T * scale + mask) @ v without forming the score matrix.

    q: (B, H, Lq, D), k and v: (B, H, Lk, D), float32 or float16 (all the same); returns
    (B, H, Lq, D) of q's dtype. With `heads=H` the tensors are (B, L, H*D) instead — the
    layout linear projections produce — and so is the result. `scale` defaults to
    1/sqrt(D). `mask` broadcasts to (B, H, Lq, Lk): a float mask is added to the scores, a
    boolean one keeps True (numpy arrays, or float32 / uint32 Tensors). `causal=True` lets
    query i see keys 0..i (needs Lq == Lk). Rows with every key masked give 0, like torch.
    Accumulates in float32. torch: `F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
    is_causal=causal, scale=scale)`.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        _check(x, name)
    if heads is not None and (not isinstance(heads, (int, np.integer)) or heads < 1):
        raise ValueError(f"attention: heads must be a positive int, got {heads!r}")
    (b, h, lq, d), q_strides = _layout(q, "q", heads)
    (kb, kh, lk, kd), k_strides = _layout(k, "k", heads)
    vshape, v_strides = _layout(v, "v", heads)
    if (kb, kh, kd) != (b, h, d) or vshape != (kb, kh, lk, kd):
        raise ValueError(f"attention: shapes q {q.shape}, k {k.shape}, v {v.shape} do not "
                         "match: k and v need q's batch, heads and head dim, and the same length")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"attention: q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype}); "
                        "convert with .astype(...)")
    if k.device is not q.device or v.device is not q.device:
        raise ValueError("attention: q, k and v must be on one device")
    if causal and lq != lk:
        raise ValueError(f"attention: causal=True needs Lq == Lk, got Lq={lq}, Lk={lk}")
    device = q.device
    mask_tensor, kind, m_strides = (_dummy(device), 0, [0, 0, 0, 0])
    if mask is not None:
        mask_tensor, kind, m_strides = _mask(mask, (b, h, lq, lk), device)
    out = Tensor.empty(q.shape, q.dtype, device=device)
    if out.size == 0:
        return out
    if d == 0 or lk == 0:
        raise ValueError(f"attention: needs D >= 1 and Lk >= 1, got D={d}, Lk={lk}")
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    plan = plan_for(d, device, lq, b * h)
    kernel = _kernel(q.dtype, kind, plan)
    kernel.dispatch(
        (math.ceil(lq / plan.BQ), b * h), q, k, v, mask_tensor, out,
        lq=lq, lk=lk, heads=h, causal=int(bool(causal)), scale=float(scale) * _LOG2E,
        q_sb=q_strides[0], q_sh=q_strides[1], q_sl=q_strides[2],
        k_sb=k_strides[0], k_sh=k_strides[1], k_sl=k_strides[2],
        v_sb=v_strides[0], v_sh=v_strides[1], v_sl=v_strides[2],
        o_sb=q_strides[0], o_sh=q_strides[1], o_sl=q_strides[2],
        m_sb=m_strides[0], m_sh=m_strides[1], m_sq=m_strides[2], m_sk=m_strides[3],
    )
    return out
