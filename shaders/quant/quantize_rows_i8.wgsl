//! parts: quant/level_i8
// Rows of x [M, K] quantized to int8 for the W8A8 GEMM (gpustd/nn/int8_linear.py): each row's
// values (times factors[k] where has_smooth: SmoothQuant's per-input-channel factors) scaled by
// 127 / the row's largest magnitude, rounded to nearest even and clamped to [-127, 127], four
// to an i32 word (little-endian, the first K in the low byte, K padded with zeros to whole
// words); scale[row] = largest magnitude / 127 (0 for a zero row). One workgroup per row.
// numpy: `s = abs(x).max(1) / 127; q = clip(rint(x / s[:, None]), -127, 127).astype(int8)`.
alias T = f32;
const WG: u32 = 256u;

struct Params { m: u32, k: u32, kw: u32, has_smooth: u32 }

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> factors: array<f32>;
@group(0) @binding(2) var<storage, read_write> q: array<i32>;
@group(0) @binding(3) var<storage, read_write> scale: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

// The value quantized: element i of the row, stored at `at`, times its smoothing factor.
fn level_value(at: u32, i: u32) -> f32 {
    var v = f32(x[at]);
    if (params.has_smooth == 1u) { v *= factors[i]; }
    return v;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * groups.x;
    if (row >= params.m) { return; }  // the whole workgroup: uniform
    let base = row * params.k;
    var peak = 0.0;
    for (var i = lid; i < params.k; i += WG) { peak = max(peak, abs(level_value(base + i, i))); }
    let largest = row_peak(peak, lid, lid, WG);
    if (lid == 0u) { scale[row] = largest / 127.0; }
    store_levels(row, base, params.k, row_inverse(largest), lid, WG);
}
