// A row's RMS norm, shared by nn/rms_norm_rope and nn/rms_norm_modulate (each declares
// `x: array<T>`, `weight: array<W>`, `params` with `d` and `eps`, the overrides WG, TPR,
// AFFINE and CENTRED, and appends nn/layer_norm_row for row_sum): TPR invocations per row.
// One pass, the sum of squares in float32 (no centring: an RMS norm has no mean to cancel).

// 1 / sqrt(mean(x^2) + eps) of the row starting at `base` (all invocations must call it;
// those whose row is past the end pass live = false).
fn row_inverse_rms(base: u32, live: bool, lid: u32, lane: u32) -> f32 {
    let d = params.d;
    var q = 0.0;
    if (live) {
        for (var i = lane; i < d; i += TPR) {
            let v = f32(x[base + i]);
            q = fma(v, v, q);
        }
    }
    return 1.0 / sqrt(row_sum(q, lid, lane) / f32(d) + params.eps);
}

// Element i of the row at `base`, times `inv` (1 where there is no norm: exact) and the
// weight, rounded to T as the norm's own output would be stored before the next step reads it.
fn normed(base: u32, i: u32, inv: f32) -> f32 {
    var y = f32(x[base + i]) * inv;
    if (AFFINE) {
        var w = f32(weight[i]);
        if (CENTRED) {
            w = 1.0 + w;
        }
        y = y * w;
    }
    return f32(T(y));
}
