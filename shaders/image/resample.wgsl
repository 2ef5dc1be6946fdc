//! parts: image/planes
// One axis of Pillow's separable resampling: out(c, y, x) = sum_k w[o, k] * src(c, .., start[o] + k)
// where o is the output coordinate along the resampled axis (x when AXIS == 0, y when 1).
// The host computes the per-output windows (start, count) and weights exactly as Pillow's
// precompute_coeffs does, so this shader only gathers.
//
// Layouts, uint8 packing, the reads and the writes: image/planes (this kernel's part). With
// FIXED, weights are Pillow's 22-bit fixed-point integers and the sum is rounded the way Pillow
// rounds 8-bit images (so the result is bit-exact); otherwise weights are f32 bit patterns and
// the sum is f32.
alias Src = f32;
alias Dst = f32;
override IN_U8: bool = false;
override OUT_U8: bool = false;
override FIXED: bool = false;
override AXIS: u32 = 0u;
override WG: u32 = 256u;

const PRECISION_BITS: u32 = 22u;

struct Params {
    n: u32,          // output elements
    channels: u32,
    height_in: u32,
    width_in: u32,
    height_out: u32,
    width_out: u32,
    ksize: u32,      // weights per output coordinate
    hwc: u32,
}

@group(0) @binding(0) var<storage, read> src: array<Src>;
@group(0) @binding(1) var<storage, read> bounds: array<i32>;   // (start, count) per output
@group(0) @binding(2) var<storage, read> weights: array<i32>;  // ksize per output
@group(0) @binding(3) var<storage, read_write> out: array<Dst>;
@group(0) @binding(4) var<uniform> params: Params;

fn value(j: u32) -> f32 {
    let p = place(j, params.height_out, params.width_out, params.height_in, params.width_in);
    let o = select(p.y, p.x, AXIS == 0u);
    let start = u32(bounds[2u * o]);
    let count = u32(bounds[2u * o + 1u]);
    let base = o * params.ksize;
    var i: u32;
    var step: u32;
    if (AXIS == 0u) {
        i = p.plane + p.y * p.row + start * p.col;
        step = p.col;
    } else {
        i = p.plane + start * p.row + p.x * p.col;
        step = p.row;
    }
    var fixed_sum: i32 = 1 << (PRECISION_BITS - 1u);
    var sum = 0.0;
    for (var k = 0u; k < count; k++) {
        if (FIXED) {
            fixed_sum += i32(load(i)) * weights[base + k];
        } else {
            sum += load(i) * bitcast<f32>(weights[base + k]);
        }
        i += step;
    }
    if (FIXED) {
        // Pillow's clip8: an arithmetic shift (floor) of the rounded sum, clamped to a byte.
        return f32(clamp(fixed_sum >> PRECISION_BITS, 0, 255));
    }
    return sum;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    put((wid.y * nwg.x + wid.x) * WG + lid);
}
