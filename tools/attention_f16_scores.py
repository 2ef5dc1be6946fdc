"""Lab tool: what f16 scores would cost the matrix-unit flash attention in accuracy, on the CPU
(numpy, no GPU). An f16-result subgroup matrix for S = q k^T (half S's workgroup-memory
traffic) rounds its sum to f16 after every 16-wide product along the head dim; this emulates
exactly that (f32 products of f16 inputs, the running sum rounded to f16 after each 16
columns), then P = exp2(S - max) rounded to f16 as the kernel writes it, the rest in float64,
and compares both with float64 attention and with the same pipeline on f32 scores:

    python -m tools.attention_f16_scores
"""

from __future__ import annotations

import numpy as np

_LOG2E = 1.4426950408889634
# (name, scale of q, scale of k: None = a ramp 0.5 -> 2.5 along the keys, as the sweep's)
CASES = [("ramp (the sweep's)", 1.5, None), ("flat 1.5 (the sweep's --flat)", 1.5, 1.5),
         ("unit scale", 1.0, 1.0), ("peaked (3.0)", 3.0, 3.0)]


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, scores: str) -> np.ndarray:
    """softmax(q k^T / sqrt(d)) v with S in `scores` ("float64", "f32" or "f16") and, but for
    float64, P rounded to f16."""
    d = q.shape[-1]
    if scores == "f16":
        s = np.zeros((q.shape[0], k.shape[0]), np.float16)
        for c in range(0, d, 16):
            part = q[:, c:c + 16].astype(np.float32) @ k[:, c:c + 16].astype(np.float32).T
            s = (s.astype(np.float32) + part).astype(np.float16)
        s = s.astype(np.float64)
    else:
        s = q.astype(np.float64) @ k.astype(np.float64).T
        if scores == "f32":
            s = s.astype(np.float32).astype(np.float64)
    s *= _LOG2E / np.sqrt(d)
    p = np.exp2(s - s.max(1, keepdims=True))
    if scores != "float64":
        p = p.astype(np.float16).astype(np.float64)
    return (p @ v.astype(np.float64)) / p.sum(1, keepdims=True)


def main() -> None:
    rng = np.random.default_rng(0)
    lq, lk, d = 256, 4608, 128  # 256 of FLUX's query rows against all its 4608 keys
    print(f"{'inputs':32} {'top score (log2)':>16} {'f32 S':>9} {'f16 S':>9}")
    for name, q_scale, k_scale in CASES:
        q = (q_scale * rng.standard_normal((lq, d))).astype(np.float16)
        ramp = np.linspace(0.5, 2.5, lk) if k_scale is None else np.full(lk, k_scale)
        k = (ramp[:, None] * rng.standard_normal((lk, d))).astype(np.float16)
        v = rng.standard_normal((lk, d)).astype(np.float16)
        ref = attention(q, k, v, "float64")
        norm = np.abs(ref).max()
        err = {s: np.abs(attention(q, k, v, s) - ref).max() / norm for s in ("f32", "f16")}
        top = (q.astype(np.float64) @ k.astype(np.float64).T).max() * _LOG2E / np.sqrt(d)
        print(f"{name:32} {top:16.1f} {err['f32']:9.1e} {err['f16']:9.1e}")


if __name__ == "__main__":
    main()
