//! parts: nn/layer_norm_row
// LayerNorm over the last dimension: each row of `d` elements is handled by TPR
// invocations (WG / TPR rows per workgroup); the statistics come from the part
// nn/layer_norm_row (shared with quant/layer_norm_i8). MODULATE: adaLN's modulation in the
// same pass, gamma and beta then each batch entry's scale and shift rows (`width` apart, a
// batch entry being `length` rows; from columns scale_at and shift_at, so both can be read in
// place from one adaLN linear's output): the norm rounded to T as a separate pass stores it,
// then y * (1 + scale) + shift in T's arithmetic, as the DiTs' compiled modulate computes it.
alias T = f32;
override WG: u32 = 256u;
override TPR: u32 = 64u;  // invocations per row, a power of two dividing WG
override AFFINE: bool = true;
override MODULATE: bool = false;

struct Params { rows: u32, d: u32, eps: f32, length: u32, width: u32, scale_at: u32,
                shift_at: u32 }

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> gamma: array<T>;
@group(0) @binding(2) var<storage, read> beta: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let lane = lid % TPR;
    let row = (wid.y * nwg.x + wid.x) * (WG / TPR) + lid / TPR;
    let live = row < params.rows;
    let base = row * params.d;
    let m = row_moments(base, live, lid, lane);
    if (live) {
        for (var i = lane; i < params.d; i += TPR) {
            var y = normalized(base, i, m);
            if (AFFINE) {
                y = fma(y, f32(gamma[i]), f32(beta[i]));
            }
            if (MODULATE) {
                let at = row / params.length * params.width + i;
                y = f32(T(y) * (T(1.0) + gamma[at + params.scale_at]) + beta[at + params.shift_at]);
            }
            out[base + i] = T(y);
        }
    }
}
