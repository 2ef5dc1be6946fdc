"""Scaled dot-product attention as one flash-attention kernel: shaders/nn/attention.wgsl.

The Lq x Lk score matrix is never stored: each workgroup streams key/value tiles through
workgroup memory with an online softmax, so memory traffic and allocation are those of q, k,
v and the output (plus the mask, when one is given). The kernel binds q, k, v, mask and out
and nothing else; tests/test_attention.py counts the buffers a 16384-token call creates
(only the output). Tile shapes per head dim and device come from _attention_plan.
Head dims from 256 on (the VAEs' single 512-wide head, AuraFlow's and Ideogram 4's heads) run
instead as two GEMMs around a row softmax, a bounded chunk of the score matrix at a time
(_attention_wide; the (B, L, H*D) layout's heads copied into blocks first). Float16 calls
without causal, unmasked or with a key mask (one bias a batch, head and key: a batch of
padded prompts), run on the matrix units where the device has them
(_attention_subgroup_matrix; head dims to 160, and 256); masks with a query dimension stay on
this kernel.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import FeatureError, Kernel

from .._tensor import Tensor
from ..shape import permute
from . import _attention_cpu, _attention_subgroup_matrix, _attention_wide
from ._attention_plan import Plan, plan_for

__all__ = ["attention"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float16))
_LOG2E = 1.4426950408889634


def _cpu_sizes(plan: Plan, budget: int) -> dict[str, int]:
    """DCH and KV_LEN of a CPU adapter's kernel, which reads the plan's D, DCH, NDG and KB
    from the params: the chunk rounded up to 32 dims and kv to at least such a chunk of k
    and the largest v block (KB = BK, NDG = CS), so that the plans of one (RG, CS, NV) share
    one kernel (a CPU's plans of head dims up to 64 do: _attention_plan.cpu_plan) where the
    workgroup memory allows."""
    dch = 32 * math.ceil(plan.DCH / 32)
    kv_len = max(plan.kv_len(), (dch | 1) * plan.CS, 4 * plan.CS * plan.NV * plan.CS)
    fixed = 4 * plan.CS * plan.RG + plan.RG + (0 if plan.subgroups else plan.CS * plan.RG)
    if 16 * ((dch | 1) * plan.RG + kv_len + fixed) > budget:
        return {"DCH": plan.DCH, "KV_LEN": plan.kv_len()}
    return {"DCH": dch, "KV_LEN": kv_len}


def _kernel(dtype: np.dtype, mask_kind: int, plan: Plan, *, cpu_budget: int = 0) -> Kernel:
    """The kernel of `plan`; `cpu_budget` (a CPU adapter's workgroup memory, 0 for GPUs)
    gives the CPU variant."""
    reduce = "subgroup" if plan.subgroups else "shared"
    types = {"T": "f16" if dtype == np.float16 else "f32", "M": "u32" if mask_kind == 2 else "f32"}
    constants: dict[str, float] = {**plan.constants(), "MASK": mask_kind}
    if cpu_budget:
        # llvmpipe (lavapipe) turns a kernel into machine code at its first dispatch: 0.8-2 s
        # of CPU for this one with its loops unrolled and k and v prefetched, 0.4 s with its
        # loops kept (LOOPS) and no prefetch, and plans that differ only in their key slices,
        # head dims, chunks, dim groups and v blocks share one kernel (read from the params).
        # These change when loads and iterations run, not an operation or its order: the
        # same bits (bench/NOTES.md, a first picture on CPUs).
        for name in ("D", "NDG", "KB"):
            del constants[name]
        constants.update(PF=0, LOOPS=1, KS=1, **_cpu_sizes(plan, cpu_budget))
    return Kernel.cached("nn/attention", parts=(f"nn/attention_reduce_{reduce}",), types=types,
                         constants=constants)


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
    """The mask on the GPU, its kind (1 additive f32, 2 boolean u32; 0 for a host array
    that keeps every key, all True or all 0.0: no mask) and its 4 strides against
    (B, H, Lq, Lk) (0 along broadcast dims)."""
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
        strides = _strides(array.shape, shape)
        if not array.any():  # keeps every key (no read-back: the host has it)
            return _dummy(device), 0, [0, 0, 0, 0]
        return Tensor.from_numpy(array.astype(np.float32), device=device), 1, strides
    return mask, kind, _strides(mask.shape, shape)


def _strides(mask_shape: tuple[int, ...], shape: tuple[int, int, int, int]) -> list[int]:
    """A mask's element strides against (B, H, Lq, Lk), 0 along broadcast dims."""
    if len(mask_shape) > 4:
        raise ValueError(f"attention: mask shape {mask_shape} has more than 4 dims")
    mshape = (1,) * (4 - len(mask_shape)) + tuple(mask_shape)
    if any(m not in (1, s) for m, s in zip(mshape, shape)):
        raise ValueError(f"attention: mask shape {mask_shape} does not broadcast to "
                         f"(B, H, Lq, Lk) = {shape}")
    return [math.prod(mshape[i + 1:]) if mshape[i] != 1 else 0 for i in range(4)]


def _dummy(device: Any) -> Tensor:
    return device.keep("attention no mask", lambda: Tensor.from_numpy(
        np.zeros(1, np.float32), device=device))


def attention(q: Tensor, k: Tensor, v: Tensor, *, mask: Any = None, causal: bool = False,
              scale: float | None = None, heads: int | None = None) -> Tensor:
    """softmax(q @ k^T * scale + mask) @ v without forming the score matrix.

    q: (B, H, Lq, D), k and v: (B, H, Lk, D), float32 or float16 (all the same); returns
    (B, H, Lq, D) of q's dtype. With `heads=H` the tensors are (B, L, H*D) instead — the
    layout linear projections produce — and so is the result. `scale` defaults to
    1/sqrt(D). `mask` broadcasts to (B, H, Lq, Lk): a float mask is added to the scores, a
    boolean one keeps True (numpy arrays, or float32 / uint32 Tensors); a numpy mask that
    keeps every key (all True, all 0.0) is no mask. `causal=True` lets
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
    if lq and (d == 0 or lk == 0):
        raise ValueError(f"attention: needs D >= 1 and Lk >= 1, got D={d}, Lk={lk}")
    device = q.device
    mask_tensor, kind, m_strides = (_dummy(device), 0, [0, 0, 0, 0])
    if mask is not None:
        mask_tensor, kind, m_strides = _mask(mask, (b, h, lq, lk), device)
    out = Tensor.empty(q.shape, q.dtype, device=device)
    if out.size == 0:
        return out
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    # a key mask (one bias a batch, head and key: padded prompts) rides the matrix units too
    if (q.dtype == np.float16 and m_strides[2] == 0 and not causal
            and _attention_subgroup_matrix.available(device)
            and _attention_subgroup_matrix.supports(d, lq, lk, b * h, device, kind)):
        _attention_subgroup_matrix.record_attention_sm(  # the matrix units (Dawn)
            q, k, v, out, shape=(b, h, lq, lk, d), scale=scale,
            strides=(q_strides, k_strides, v_strides, q_strides),
            mask=(mask_tensor, kind, (m_strides[0], m_strides[1], m_strides[3])) if kind else None)
        return out
    if (kind == 0 and not causal and heads is not None and h > 1
            and _attention_wide.applies(d, q.dtype, device, True)):
        # wide heads in the projections' (B, L, H*D) layout (AuraFlow's and Ideogram 4's 256
        # in float32, or without matrix units): each head made one contiguous block for the
        # GEMMs, which the flash kernel's scalar path ran 5-10x slower than (three copies
        # cost ~1% of the GEMMs' time)
        split = [permute(x.reshape(b, -1, h, d), (0, 2, 1, 3)) for x in (q, k, v)]
        return permute(attention(*split, scale=scale), (0, 2, 1, 3)).reshape(b, lq, h * d)
    if (kind == 0 and not causal
            and _attention_wide.applies(d, q.dtype, device, heads is None or h == 1)):
        _attention_wide.record_attention_wide(q, k, v, out, shape=(b, h, lq, lk, d),
                                              scale=scale)
        return out
    if _attention_cpu.applies(d, device):
        _attention_cpu.record_attention_cpu(
            q, k, v, mask_tensor, out, shape=(b, h, lq, lk, d), scale=float(scale) * _LOG2E,
            kind=kind, causal=causal, strides=(q_strides, k_strides, v_strides, q_strides,
                                               m_strides))
        return out
    plan = plan_for(d, device, lq, b * h, lk)
    cpu_budget = (device.limits["max-compute-workgroup-storage-size"]
                  if device.info.type == "cpu" else 0)
    kernel = _kernel(q.dtype, kind, plan, cpu_budget=cpu_budget)
    kernel.dispatch(
        (math.ceil(lq / (4 * plan.RG)), b * h), q, k, v, mask_tensor, out,
        lq=lq, lk=lk, heads=h, causal=int(bool(causal)), scale=float(scale) * _LOG2E,
        q_sb=q_strides[0], q_sh=q_strides[1], q_sl=q_strides[2],
        k_sb=k_strides[0], k_sh=k_strides[1], k_sl=k_strides[2],
        v_sb=v_strides[0], v_sh=v_strides[1], v_sl=v_strides[2],
        o_sb=q_strides[0], o_sh=q_strides[1], o_sl=q_strides[2],
        m_sb=m_strides[0], m_sh=m_strides[1], m_sq=m_strides[2], m_sk=m_strides[3],
        ks=plan.KS, d=plan.D, dch=plan.DCH, ndg=plan.NDG, kb=plan.KB,
    )
    return out
