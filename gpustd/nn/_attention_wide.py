"""Attention at wide head dims as two GEMMs around a row softmax, a chunk of query rows at a
time: the VAEs' single 512-wide head (SD's, SDXL's, FLUX's and SD 3.5's mid blocks, 16,384
tokens at 1024²), which no matrix-unit attention plan holds in registers and which the flash
kernel (shaders/nn/attention.wgsl) runs on its portable loops.

Per batch entry and chunk of query rows: S = scale q k^T in float32 (on the matrix units for
float16, their f32 sums stored as f32), P = softmax(S) row by row in float32, stored in q's
dtype, O = P v (float32 accumulation) into the output's rows. P is normalised before it is
rounded, so in float16 its values lie in [0, 1] (torch's math backend computes the same
way). Only a chunk of the score matrix exists at once: SCORE_BYTES of float32 scores, P and
the chunk's output beside them. The VAEs call it where their activations are smallest (the
mid block, at the latents' size), so the chunk does not raise a decode's peak.

H100, Dawn, D 512, GPU ms (bench/NOTES.md, "The VAEs' attention as two GEMMs"): float16
16,384 tokens 5.5 against the flash kernel's 50.8 (SDPA 4.75), 65,536 tokens (a 2048² picture)
105 against 812; float32 16,384 tokens 20.1 against 50.5 (SDPA without TF32 14.6).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Buffer, Kernel, wgsl_scalar

from .._reduce import pow2
from .._tensor import Tensor
from ..gemm import matrix_units
from ..gemm.dispatch import record_gemm
from ..gemm.plan import BatchPlan
from . import _attention_cpu

__all__ = ["SCORE_BYTES", "WIDE_FROM", "applies", "chunk_rows", "record_attention_wide"]

WIDE_FROM = 256  # head dims from this on take this path (no attention of a DiT or UNet has one)
# Float32 scores of one chunk: 2048 rows against 16,384 keys, 512 against 65,536. Smaller
# chunks lose (H100, Dawn, float16, GPU ms at 16 / 32 / 64 / 128 / 256 MiB; bench/NOTES.md):
# 16,384 tokens 9.34 / 7.35 / 8.02 / 5.82 / 5.96, 65,536 tokens 331 / 229 / 134 / 105 / 121
# (the softmax's one workgroup a row fills the GPU from ~512 rows on).
SCORE_BYTES = 128 << 20


def applies(d: int, dtype: np.dtype, device: Any, contiguous: bool) -> bool:
    """Whether an unmasked, non-causal call of head dim `d` runs here: wide heads whose
    batch entries are contiguous L x D blocks ((B, H, L, D), or one head of (B, L, D)), in
    float32 anywhere and in float16 where the device has the matrix units (the portable
    GEMM would round float16 scores). On CPU adapters every head past the direct kernel's
    (_attention_cpu.MAX_D) is wide: a small VAE's single 64-wide head then runs on the GEMM
    kernels its convs' neighbours have built, not the flash kernel, which llvmpipe spends 2 s
    of every process compiling."""
    wide_from = WIDE_FROM
    if _attention_cpu.applies(_attention_cpu.MAX_D, device):
        wide_from = _attention_cpu.MAX_D + 1
    return (d >= wide_from and d % 2 == 0 and contiguous
            and (dtype == np.float32 or matrix_units.available(device)))


def chunk_rows(lq: int, lk: int, device: Any = None) -> int:
    """Query rows a chunk holds: SCORE_BYTES of float32 scores (no more than the device
    binds in one storage buffer; under a memory cap, gpucore's --max-vram, at most a
    sixteenth of it), at most Lq, an even count (the chunk's output is copied into place at
    4-byte aligned offsets)."""
    budget = SCORE_BYTES
    limits = getattr(device, "limits", None) or {}
    budget = min(budget, limits.get("max-storage-buffer-binding-size", budget))
    cap = getattr(getattr(device, "memory_limit", None), "bytes", None)
    if cap is not None:
        budget = min(budget, cap // 16)
    return max(2, min(lq, budget // (4 * lk)) // 2 * 2)


def _softmax(scores: Buffer[Any], probs: Buffer[Any], rows: int, length: int,
             scale: float) -> None:
    """Record probs = softmax(scale * scores) of `rows` rows of `length`
    (shaders/nn/attention_rows.wgsl: two reads of a score, the max and the sum in one)."""
    lanes = min(256, pow2(-(-length // 8)))  # short rows: fewer lanes a row
    kernel = Kernel.cached("nn/attention_rows", types={"U": wgsl_scalar(probs.dtype)},
                           constants={"WY": lanes})
    kernel.dispatch(rows, scores, probs, rows=rows, len=length, scale=float(scale))


def _single(a_base: int, b_base: int) -> BatchPlan:
    """One product whose A and B start at these element offsets."""
    return BatchPlan(1, 1, 1, (0, 0), (0, 0), ((a_base, b_base),))


def record_attention_wide(q: Tensor, k: Tensor, v: Tensor, out: Tensor, *,
                          shape: tuple[int, int, int, int, int], scale: float) -> None:
    """Record out = softmax(scale q k^T) v for q (E, Lq, D), k and v (E, Lk, D) contiguous
    (E = B H batch entries, `shape` = (B, H, Lq, Lk, D)); no validation (attention() has
    done it)."""
    b, h, lq, lk, d = shape
    device, dtype = q.device, q.dtype
    rows = chunk_rows(lq, lk, device)
    scores = Buffer.empty(rows * lk, np.float32, device=device)
    probs = Buffer.empty(rows * lk, dtype, device=device)
    chunk = Buffer.empty(rows * d, dtype, device=device)
    size = dtype.itemsize
    for entry in range(b * h):
        q0, kv0 = entry * lq * d, entry * lk * d
        for r0 in range(0, lq, rows):
            n = min(rows, lq - r0)
            if dtype == np.float16:
                matrix_units.record_gemm_f32_out(q.buffer, k.buffer, scores, m=n, n=lk, k=d,
                                                 trans_b=True, alpha=1.0,
                                                 a_base=q0 + r0 * d, b_base=kv0)
            else:
                record_gemm(q.buffer, k.buffer, scores, None, m=n, n=lk, k=d, trans_a=False,
                            trans_b=True, alpha=1.0, beta=0.0,
                            plan=_single(q0 + r0 * d, kv0))
            _softmax(scores, probs, n, lk, scale)
            record_gemm(probs, v.buffer, chunk, None, m=n, n=d, k=lk, trans_a=False,
                        trans_b=False, alpha=1.0, beta=0.0, plan=_single(0, kv0))
            device.record_copy(chunk.wgpu, 0, out.buffer.wgpu, (q0 + r0 * d) * size,
                               n * d * size)

