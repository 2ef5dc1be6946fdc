//! parts: nn/gelu + quant/level_i8
// GELU (OP as nn/activation's: 1 exact, 2 tanh) of x, written as T (out) and at once as the
// int8 rows of the W8A8 GEMM (q, scale; gpustd/nn/int8_rows.py): what nn/activation and
// quant/quantize_rows_i8 give in two passes, bit for bit. GATED: x is [m, 2k], the GEGLU of
// nn/activation's `geglu` (x[r, j] * gelu(x[r, k + j])); else x is [m, k]. One workgroup a row,
// as quant/quantize_rows_i8; SMOOTH multiplies each value by factors[i] (SmoothQuant's 1/s)
// before it is quantized, never the T output.
alias T = f32;
const WG: u32 = 256u;
override OP: u32 = 2u;
override GATED: bool = false;
override SMOOTH: bool = false;

struct Params { m: u32, k: u32, kw: u32 }

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> factors: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;
@group(0) @binding(3) var<storage, read_write> q: array<i32>;
@group(0) @binding(4) var<storage, read_write> row_scale: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

fn activated(row: u32, i: u32) -> T {
    if (GATED) {
        let base = row * 2u * params.k + i;
        return T(f32(x[base]) * gelu(f32(x[base + params.k])));
    }
    return T(gelu(f32(x[row * params.k + i])));
}

// The value quantized: the T output as stored (read back after the barrier: a compiler may keep
// an unrounded T in a register, which NVIDIA's does), times the smoothing factor.
fn level_value(at: u32, i: u32) -> f32 {
    var f = f32(out[at]);
    if (SMOOTH) { f *= factors[i]; }
    return f;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * groups.x;
    if (row >= params.m) { return; }  // the whole workgroup: uniform
    let base = row * params.k;
    for (var i = lid; i < params.k; i += WG) { out[base + i] = activated(row, i); }
    storageBarrier();
    // the peak over the words store_levels packs: other invocations' stores
    let largest = row_peak(words_peak(base, params.k, lid, WG), lid, lid, WG);
    if (lid == 0u) { row_scale[row] = largest / 127.0; }
    store_levels(row, base, params.k, row_inverse(largest), lid, WG);
}
