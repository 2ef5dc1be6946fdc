// The wide attention's row softmax (gpustd/nn/_attention_wide.py): p = softmax(scale * s) of
// contiguous f32 score rows, written as U (q's dtype), one workgroup a row. Two reads of a
// row where reduction/softmax_rows.wgsl makes three: each lane keeps a running max and the
// sum of exponentials rescaled to it, a tree over the lanes joins them, then the outputs.
alias U = f32;
override WY: u32 = 256u;  // lanes per row, a power of two

struct Params { rows: u32, len: u32, scale: f32 }

@group(0) @binding(0) var<storage, read> s: array<f32>;
@group(0) @binding(1) var<storage, read_write> p: array<U>;
@group(0) @binding(2) var<uniform> params: Params;

var<workgroup> peaks: array<f32, WY>;
var<workgroup> sums: array<f32, WY>;

@compute @workgroup_size(WY)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= params.rows) {
        return;  // the whole workgroup: its row is past the end
    }
    let base = row * params.len;
    var peak = params.scale * s[base];  // every lane starts from the row's first score
    var sum = 0.0;
    for (var l = lane; l < params.len; l += WY) {
        let v = params.scale * s[base + l];
        if (v > peak) {
            sum *= exp(peak - v);
            peak = v;
        }
        sum += exp(v - peak);
    }
    peaks[lane] = peak;
    sums[lane] = sum;
    workgroupBarrier();
    for (var half = WY / 2u; half > 0u; half >>= 1u) {
        if (lane < half) {
            let other = peaks[lane + half];
            let top = max(peak, other);
            sum = sum * exp(peak - top) + sums[lane + half] * exp(other - top);
            peak = top;
            peaks[lane] = peak;
            sums[lane] = sum;
        }
        workgroupBarrier();
    }
    let top = peaks[0];
    let inverse = 1.0 / sums[0];
    for (var l = lane; l < params.len; l += WY) {
        p[base + l] = U(exp(params.scale * s[base + l] - top) * inverse);
    }
}
