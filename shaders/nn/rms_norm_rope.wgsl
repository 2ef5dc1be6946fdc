//! parts: nn/layer_norm_row + nn/rms_norm_row
// RMS norm of each head (a row of `d` elements) and the rotary embedding after it, in one
// pass: the q/k of the diffusion transformers, which otherwise take a square, a mean, a
// normalize, a pair-swap GEMM, a rotate and two casts. TPR invocations per row (WG / TPR rows
// per workgroup); row_inverse_rms and normed come from the part nn/rms_norm_row.
//
// Row r of x is head r % heads of token t = r / heads, token l = t % length of batch entry
// b = t / length; it is written to token start + l of an output of `total` tokens (a joint
// text + image buffer, each stream written in place) and rotated by table row start + l.
alias T = f32;
alias W = f32;  // the weight's type (a float32 weight may scale float16 rows, or back)
override WG: u32 = 256u;
override TPR: u32 = 32u;     // invocations per row, a power of two dividing WG
override NORM: bool = true;  // x / sqrt(mean(x^2) + eps)
override AFFINE: bool = true;  // ... * weight[i]
override CENTRED: bool = false;  // ... * (1 + weight[i]): a zero-centred weight, in float32
override ROPE: bool = true;  // then the pairs rotated by cos/sin
override HALVES: bool = false;  // pairs (i, i + d/2) rather than (2i, 2i + 1)

struct Params { rows: u32, d: u32, eps: f32, heads: u32, length: u32, total: u32, start: u32 }

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> weight: array<W>;
@group(0) @binding(2) var<storage, read> cos_table: array<f32>;
@group(0) @binding(3) var<storage, read> sin_table: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let lane = lid % TPR;
    let row = (wid.y * nwg.x + wid.x) * (WG / TPR) + lid / TPR;
    let live = row < params.rows;
    let d = params.d;
    let base = row * d;
    var inv = 1.0;
    if (NORM) {
        // every invocation reaches row_sum's barriers, live or not
        inv = row_inverse_rms(base, live, lid, lane);
    }
    if (!live) {
        return;
    }
    let token = row / params.heads;
    let position = params.start + token % params.length;
    let dest = ((token / params.length) * params.total + position) * params.heads
        + row % params.heads;
    let out_base = dest * d;
    if (!ROPE) {
        for (var i = lane; i < d; i += TPR) {
            out[out_base + i] = T(normed(base, i, inv));
        }
        return;
    }
    let pair_count = d / 2u;
    let table = position * d;
    for (var p = lane; p < pair_count; p += TPR) {
        var a = 2u * p;
        var b = a + 1u;
        if (HALVES) {
            a = p;
            b = p + pair_count;
        }
        let xa = normed(base, a, inv);
        let xb = normed(base, b, inv);
        // (x_a, x_b) -> (x_a cos_a - x_b sin_a, x_b cos_b + x_a sin_b)
        out[out_base + a] = T(xa * cos_table[table + a] - xb * sin_table[table + a]);
        out[out_base + b] = T(xb * cos_table[table + b] + xa * sin_table[table + b]);
    }
}
