//! parts: nn/layer_norm_row + nn/rms_norm_row
// RMS norm over the last dimension with its optional per-channel weight, then adaLN's
// modulation, in one pass: the RMS-normed DiTs' (Krea 2, Z-Image) pre-attention and pre-MLP
// inputs, which otherwise take a norm pass and a modulate pass (and a `1 + weight` pass for a
// zero-centred weight). TPR invocations per row (WG / TPR rows per workgroup). The statistics
// and the weighted norm rounded to T come from the part nn/rms_norm_row (nn/rms_norm_rope's
// too), then the modulation in T's arithmetic as the DiTs' compiled modulate kernel computes
// it: the two passes' bits.
//
// A batch entry is `length` rows; its scale and shift rows are `width` apart, read from
// columns scale_at and shift_at (both in place from one adaLN linear's output).
alias T = f32;
alias W = f32;  // the weight's type (Krea 2 keeps float32 weights over float16 rows)
override WG: u32 = 256u;
override TPR: u32 = 32u;        // invocations per row, a power of two dividing WG
override AFFINE: bool = true;   // ... * weight[i]
override CENTRED: bool = false;  // ... * (1 + weight[i]): a zero-centred weight, in float32
override SHIFT: bool = true;    // ... + shift (false: the scale alone, as Z-Image's)

struct Params { rows: u32, d: u32, eps: f32, length: u32, width: u32, scale_at: u32,
                shift_at: u32 }

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> weight: array<W>;
@group(0) @binding(2) var<storage, read> scale: array<T>;
@group(0) @binding(3) var<storage, read> shift: array<T>;
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
    // every invocation reaches row_sum's barriers, live or not
    let inv = row_inverse_rms(base, live, lid, lane);
    if (!live) {
        return;
    }
    let at = row / params.length * params.width;
    for (var i = lane; i < d; i += TPR) {
        var m = T(normed(base, i, inv)) * (T(1.0) + scale[at + params.scale_at + i]);
        if (SHIFT) {
            m = m + shift[at + params.shift_at + i];
        }
        out[base + i] = m;
    }
}
