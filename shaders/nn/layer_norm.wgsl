// LayerNorm over the last dimension: each row of `d` elements is handled by TPR
// invocations (WG / TPR rows per workgroup). Mean first, then the centered sum of squares
// in a second pass over the (cached) row, which avoids the cancellation of E[x^2] - E[x]^2.
// Everything is taken relative to the row's first element x0 (mean = x0 + delta, centered
// values (x - x0) - delta): a row around 1e4 would otherwise lose digits twice, in float32
// sums of size 3e7 and in a mean whose own ulp is 1e-3.
alias T = f32;
override WG: u32 = 256u;
override TPR: u32 = 64u;  // invocations per row, a power of two dividing WG
override AFFINE: bool = true;

struct Params { rows: u32, d: u32, eps: f32 }

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> gamma: array<T>;
@group(0) @binding(2) var<storage, read> beta: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;
@group(0) @binding(4) var<uniform> params: Params;

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

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let lane = lid % TPR;
    let row = (wid.y * nwg.x + wid.x) * (WG / TPR) + lid / TPR;
    let live = row < params.rows;
    let base = row * params.d;
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
    if (live) {
        for (var i = lane; i < d; i += TPR) {
            var y = ((f32(x[base + i]) - shift) - delta) * rstd;
            if (AFFINE) {
                y = fma(y, f32(gamma[i]), f32(beta[i]));
            }
            out[base + i] = T(y);
        }
    }
}
