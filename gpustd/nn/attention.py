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
_kernels: dict[tuple, Kernel] = {}
_plans: dict[tuple[int, ...], Plan] = {}
_dummies: dict[int, Tensor] = {}


@dataclass(frozen=True)
class Plan:
    """Tile shape of one kernel specialization (the shader's override constants)."""

    # Field names are the shader's override names.
    D: int  # head dim
    RG: int  # query rows / 4 per workgroup (BQ = 4 RG)
    CS: int  # keys / 4 per tile (BK = 4 CS); the workgroup has RG * CS invocations
    NV: int  # output dim vec4s per invocation
    NDG: int  # output dim groups (NV * NDG * 4 >= D)
    DCH: int  # head dims per staged chunk of q and k
    KB: int  # keys of v staged at a time

    def __post_init__(self) -> None:
        if not (4 * self.NV * self.NDG >= self.D and 1 <= self.NV <= 8 and self.NDG <= self.CS
                and (4 * self.CS) % self.KB == 0 and min(asdict(self).values()) >= 1):
            raise ValueError(f"attention: inconsistent tile plan {self}")

    def kv_len(self) -> int:
        return max((self.DCH | 1) * self.CS, self.KB * self.NV * self.NDG)

    def constants(self) -> dict[str, int]:
        return {**asdict(self), "KV_LEN": self.kv_len()}

    def workgroup_bytes(self) -> int:
        vec4s = (self.DCH | 1) * self.RG + self.kv_len() + 4 * self.CS * self.RG
        return 16 * vec4s + 4 * 4 * self.RG * (self.CS + 2)


def _candidates(d: int, budget: int, max_invocations: int) -> list[Plan]:
    """Tile plans for head dim `d` that the shader's invariants and the workgroup memory
    allow: for each register tile, the largest chunks of q/k dims and of v keys that fit."""
    d4 = math.ceil(d / 4)
    found = []
    for nv in range(1, 9):
        ndg = math.ceil(d4 / nv)
        if math.ceil(d4 / ndg) != nv:
            continue  # a whole vec4 of padding: a smaller nv gives the same tile
        for rg in (32, 16, 8, 4):
            for cs in sorted({ndg, 8, 16, 32}):
                if cs < ndg or rg * cs > min(256, max_invocations):
                    continue
                plan = _fit(d, rg, cs, nv, ndg, budget)
                if plan is not None:
                    found.append(plan)
    return found


def _fit(d: int, rg: int, cs: int, nv: int, ndg: int, budget: int) -> Plan | None:
    """The plan with the fewest q/k chunks, then the most v keys per block, that fits."""
    bk = 4 * cs
    for nch in range(1, d + 1):
        dchp = math.ceil(d / nch) | 1
        room = budget // 16 - dchp * rg - 4 * cs * rg - rg * (cs + 2) // 4 - 1
        blocks = [x for x in range(1, bk + 1) if bk % x == 0 and x * nv * ndg <= room]
        if dchp * cs <= room and blocks:
            plan = Plan(d, rg, cs, nv, ndg, math.ceil(d / nch), max(blocks))
            return plan if plan.workgroup_bytes() <= budget else None
    return None


def _cost(plan: Plan, rows: int, batch_heads: int) -> float:
    """Modelled time (arbitrary units) for `batch_heads` heads of `rows` queries per key.

    Per (query, key) pair: an FMA per padded head dim in each phase; workgroup-memory vec4
    loads (weighted 4: they issue far slower than FMAs) of 1 per 8 FMAs for scores and
    (1 + NV) per 16 NV for the output; output-phase invocations left idle (half cost);
    each tile's barriers, softmax statistics and global loads spread over its BQ*BK
    pairs. Grids below ~2 workgroups per SM of a large GPU leave SMs idle, so time scales
    with 1 / min(workgroups, 264)."""
    bq, bk, wg = 4 * plan.RG, 4 * plan.CS, plan.RG * plan.CS
    nch = math.ceil(plan.D / plan.DCH)
    dims_s, dims_o = nch * plan.DCH, 4 * plan.NV * plan.NDG
    scores = dims_s * (1 + 4 / 8)
    output = dims_o * (1 + 4 * (1 + plan.NV) / (16 * plan.NV))
    output *= 1 + 0.5 * (wg / (plan.RG * plan.NDG) - 1)
    per_tile = (2 * nch + 2 + 2 * bk / plan.KB) * 40 + 3 * plan.CS
    per_tile += 2 * (bk * (dims_s + dims_o) + (nch > 1) * bq * dims_s) / wg
    per_pair = scores + output + 8 + wg * per_tile / (bq * bk)
    per_pair *= (1 + 16 / wg) * (1.15 if plan.NV > 4 else 1.0)
    groups = math.ceil(rows / bq) * batch_heads
    return per_pair * groups * bq / min(groups, 264)


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
            "nn/attention", types=types, constants={**plan.constants(), "MASK": mask_kind})
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
        (math.ceil(lq / (4 * plan.RG)), b * h), q, k, v, mask_tensor, out,
        lq=lq, lk=lk, heads=h, causal=int(bool(causal)), scale=float(scale) * _LOG2E,
        q_sb=q_strides[0], q_sh=q_strides[1], q_sl=q_strides[2],
        k_sb=k_strides[0], k_sh=k_strides[1], k_sl=k_strides[2],
        v_sb=v_strides[0], v_sh=v_strides[1], v_sl=v_strides[2],
        o_sb=q_strides[0], o_sh=q_strides[1], o_sl=q_strides[2],
        m_sb=m_strides[0], m_sh=m_strides[1], m_sq=m_strides[2], m_sk=m_strides[3],
    )
    return out
