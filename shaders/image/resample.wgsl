// One axis of Pillow's separable resampling: out(c, y, x) = sum_k w[o, k] * src(c, .., start[o] + k)
// where o is the output coordinate along the resampled axis (x when AXIS == 0, y when 1).
// The host computes the per-output windows (start, count) and weights exactly as Pillow's
// precompute_coeffs does, so this shader only gathers.
//
// Images are planes of (channels, height, width) stored HWC (params.hwc == 1) or CHW.
// uint8 images travel packed 4 per u32 word (Src/Dst = u32 with IN_U8/OUT_U8); WGSL has no
// 8-bit storage. With FIXED, weights are Pillow's 22-bit fixed-point integers and the sum is
// rounded the way Pillow rounds 8-bit images (so the result is bit-exact); otherwise weights are
// f32 bit patterns and the sum is f32.
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

fn load(i: u32) -> f32 {
    if (IN_U8) {
        return f32(extractBits(bitcast<u32>(src[i >> 2u]), (i & 3u) * 8u, 8u));
    }
    return bitcast<f32>(src[i]);
}

fn value(j: u32) -> f32 {
    let h = params.height_out;
    let w = params.width_out;
    // Source element (c, y, x) lives at plane + y * row + x * col in either layout.
    var c: u32;
    var y: u32;
    var x: u32;
    var plane: u32;
    var row: u32;
    var col: u32;
    if (params.hwc == 1u) {
        c = j % params.channels;
        x = (j / params.channels) % w;
        y = j / (params.channels * w);
        plane = c;
        row = params.width_in * params.channels;
        col = params.channels;
    } else {
        x = j % w;
        y = (j / w) % h;
        c = j / (w * h);
        plane = c * params.height_in * params.width_in;
        row = params.width_in;
        col = 1u;
    }
    let o = select(y, x, AXIS == 0u);
    let start = u32(bounds[2u * o]);
    let count = u32(bounds[2u * o + 1u]);
    let base = o * params.ksize;
    var i: u32;
    var step: u32;
    if (AXIS == 0u) {
        i = plane + y * row + start * col;
        step = col;
    } else {
        i = plane + start * row + x * col;
        step = row;
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
    let t = (wid.y * nwg.x + wid.x) * WG + lid;
    if (OUT_U8) {
        // One invocation per output word: four consecutive bytes, no write races.
        if (t * 4u < params.n) {
            var word = 0u;
            for (var k = 0u; k < 4u && t * 4u + k < params.n; k++) {
                word |= u32(clamp(round(value(t * 4u + k)), 0.0, 255.0)) << (8u * k);
            }
            out[t] = bitcast<Dst>(word);
        }
    } else if (t < params.n) {
        out[t] = bitcast<Dst>(value(t));
    }
}
