// A row's LayerNorm statistics, shared by nn/layer_norm and quant/layer_norm_i8, and its
// row_sum by the RMS norms of nn/rms_norm_row (each declares `x: array<T>`, `params` with `d`
// and `eps`, and the overrides WG and TPR): TPR invocations per row (WG / TPR rows per
// workgroup). Mean first, then the centered sum of squares in a second pass over the (cached)
// row, which avoids the cancellation of E[x^2] - E[x]^2.
// Everything is taken relative to the row's first element x0 (mean = x0 + delta, centered
// values (x - x0) - delta): a row around 1e4 would otherwise lose digits twice, in float32
// sums of size 3e7 and in a mean whose own ulp is 1e-3.
var<workgroup> red: array<f32, WG>;

// Sum of v over this invocation's row segment (all invocations must call it).
fn row_sum(v: f32, lid: u32, lane: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = TPR / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[lid - lane];
    workgroupBarrier();
    return total;
}

// (x0, delta, 1 / std) of the row starting at `base` (all invocations must call it; those
// whose row is past the end pass live = false).
fn row_moments(base: u32, live: bool, lid: u32, lane: u32) -> vec3<f32> {
    let d = params.d;
    var s = 0.0;
    var shift = 0.0;
    if (live) {
        shift = f32(x[base]);
        for (var i = lane; i < d; i += TPR) {
            s += f32(x[base + i]) - shift;
        }
    }
    let delta = row_sum(s, lid, lane) / f32(d);
    var q = 0.0;
    if (live) {
        for (var i = lane; i < d; i += TPR) {
            let c = (f32(x[base + i]) - shift) - delta;
            q = fma(c, c, q);
        }
    }
    let rstd = inverseSqrt(row_sum(q, lid, lane) / f32(d) + params.eps);
    return vec3<f32>(shift, delta, rstd);
}

// Element i of the row at `base`, normalized by row_moments' `m` (before any affine).
fn normalized(base: u32, i: u32, m: vec3<f32>) -> f32 {
    return ((f32(x[base + i]) - m.x) - m.y) * m.z;
}
