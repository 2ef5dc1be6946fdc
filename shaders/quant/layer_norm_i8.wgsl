//! parts: nn/layer_norm_row + quant/level_i8
// LayerNorm (its own weight and bias where AFFINE) or adaLN's modulated LayerNorm of x
// [rows, d], written as T (out) and at once as the int8 rows of the W8A8 GEMM (q, row_scale;
// gpustd/nn/int8_rows.py): what nn/layer_norm (then the elementwise `n * (1 + scale) + shift`)
// and quant/quantize_rows_i8 give in separate passes, bit for bit (the same statistics, the
// same T arithmetic, the levels of the T values as stored). Rows as nn/layer_norm lays them
// out (TPR invocations a row). MODULATE reads shift and scale [batches, d], row r taking batch
// r / tokens; AFFINE (never with MODULATE) reads them as the norm's bias and weight [d]
// (nn/layer_norm's beta and gamma). SMOOTH multiplies each value by factors[i] (SmoothQuant's
// 1/s) before it is quantized, never the T output.
alias T = f32;
override WG: u32 = 256u;
override TPR: u32 = 64u;  // invocations per row, a power of two dividing WG
override MODULATE: bool = true;
override AFFINE: bool = false;
override SMOOTH: bool = false;

struct Params { rows: u32, d: u32, kw: u32, tokens: u32, eps: f32 }

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> shift: array<T>;
@group(0) @binding(2) var<storage, read> scale: array<T>;
@group(0) @binding(3) var<storage, read> factors: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;
@group(0) @binding(5) var<storage, read_write> q: array<i32>;
@group(0) @binding(6) var<storage, read_write> row_scale: array<f32>;
@group(0) @binding(7) var<uniform> params: Params;

fn modulated(base: u32, i: u32, m: vec3<f32>, at: u32) -> T {
    var y = normalized(base, i, m);
    if (AFFINE) {
        y = fma(y, f32(scale[i]), f32(shift[i]));
    }
    let n = T(y);
    if (MODULATE) {
        return (n * (T(1.0) + scale[at + i])) + shift[at + i];
    }
    return n;
}

// The value quantized: the T output as stored (read back after the barrier: a compiler may keep
// an unrounded T in a register, which NVIDIA's does), times the smoothing factor.
fn level_value(at: u32, i: u32) -> f32 {
    var f = f32(out[at]);
    if (SMOOTH) { f *= factors[i]; }
    return f;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let lane = lid % TPR;
    let row = (wid.y * nwg.x + wid.x) * (WG / TPR) + lid / TPR;
    let live = row < params.rows;
    let base = row * params.d;
    let at = (row / params.tokens) * params.d;
    let m = row_moments(base, live, lid, lane);
    if (live) {
        for (var i = lane; i < params.d; i += TPR) { out[base + i] = modulated(base, i, m, at); }
    }
    storageBarrier();
    var peak = 0.0;  // over the words the packing reads: other invocations' stores
    if (live) { peak = words_peak(base, params.d, lane, TPR); }
    let largest = row_peak(peak, lid, lane, TPR);
    if (live) {
        if (lane == 0u) { row_scale[row] = largest / 127.0; }
        store_levels(row, base, params.d, row_inverse(largest), lane, TPR);
    }
}
