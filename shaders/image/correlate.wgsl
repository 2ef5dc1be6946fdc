// 2-D correlation of every channel plane with one kh x kw kernel (scipy.ndimage.correlate):
// out(c, y, x) = sum_{i,j} k[i, j] * src(c, y + i - anchor_y, x + j - anchor_x), with the image
// extended past its edges by the border mode. A 1 x k or k x 1 kernel is one separable pass.
// With GRADIENT, `weights` holds two kernels (d/dx then d/dy, e.g. Sobel) and the result is the
// gradient magnitude sqrt(gx^2 + gy^2), so no gx/gy images are ever stored.
//
// Images are planes of (channels, height, width) stored HWC (params.hwc == 1) or CHW.
// uint8 images travel packed 4 per u32 word (Src/Dst = u32 with IN_U8/OUT_U8); WGSL has no
// 8-bit storage. uint8 results are rounded (half to even) and clamped to 0..255.
alias Src = f32;
alias Dst = f32;
override IN_U8: bool = false;
override OUT_U8: bool = false;
override GRADIENT: bool = false;
override WG: u32 = 256u;

// Border modes, named as scipy.ndimage names them.
const REFLECT: u32 = 0u;   // d c b a | a b c d | d c b a
const NEAREST: u32 = 1u;   // a a a a | a b c d | d d d d
const MIRROR: u32 = 2u;    // d c b | a b c d | c b a
const WRAP: u32 = 3u;      // a b c d | a b c d | a b c d
const CONSTANT: u32 = 4u;  // k k k k | a b c d | k k k k

struct Params {
    n: u32,
    channels: u32,
    height: u32,
    width: u32,
    kh: u32,
    kw: u32,
    anchor_y: u32,
    anchor_x: u32,
    mode: u32,
    cval: f32,
    hwc: u32,
}

@group(0) @binding(0) var<storage, read> src: array<Src>;
@group(0) @binding(1) var<storage, read> weights: array<f32>;  // kh * kw (x2 with GRADIENT)
@group(0) @binding(2) var<storage, read_write> out: array<Dst>;
@group(0) @binding(3) var<uniform> params: Params;

fn load(i: u32) -> f32 {
    if (IN_U8) {
        return f32(extractBits(bitcast<u32>(src[i >> 2u]), (i & 3u) * 8u, 8u));
    }
    return bitcast<f32>(src[i]);
}

// i mod p in 0..p-1. Only non-negative operands reach `%`: OpenGL leaves the sign of a
// negative remainder undefined, and llvmpipe's GL answer differs from WGSL's.
fn positive_mod(i: i32, p: i32) -> i32 {
    if (i >= 0) {
        return i % p;
    }
    return p - 1 - (-i - 1) % p;
}

// The in-range index that coordinate i reads under the border mode; -1 means "use cval".
// Periodic forms, so kernels larger than the image still follow scipy.
fn border(i: i32, n: i32) -> i32 {
    if (i >= 0 && i < n) {
        return i;
    }
    switch params.mode {
        case REFLECT: {
            let m = positive_mod(i, 2 * n);
            return select(m, 2 * n - 1 - m, m >= n);
        }
        case NEAREST: {
            return clamp(i, 0, n - 1);
        }
        case MIRROR: {
            if (n == 1) {
                return 0;
            }
            let m = positive_mod(i, 2 * n - 2);
            return select(m, 2 * n - 2 - m, m >= n);
        }
        case WRAP: {
            return positive_mod(i, n);
        }
        default: {
            return -1;
        }
    }
}

fn value(j: u32) -> f32 {
    let h = params.height;
    let w = params.width;
    // Element (c, y, x) lives at plane + y * row + x * col in either layout.
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
        row = w * params.channels;
        col = params.channels;
    } else {
        x = j % w;
        y = (j / w) % h;
        c = j / (w * h);
        plane = c * h * w;
        row = w;
        col = 1u;
    }
    let size = params.kh * params.kw;
    var sum = 0.0;
    var sum_y = 0.0;
    let ay = params.anchor_y;
    let ax = params.anchor_x;
    if (y >= ay && y + params.kh <= h + ay && x >= ax && x + params.kw <= w + ax) {
        // Interior: the whole window is inside the image, no border arithmetic per tap.
        var i = plane + (y - ay) * row + (x - ax) * col;
        for (var ki = 0u; ki < params.kh; ki++) {
            for (var kj = 0u; kj < params.kw; kj++) {
                let v = load(i + kj * col);
                sum += weights[ki * params.kw + kj] * v;
                if (GRADIENT) {
                    sum_y += weights[size + ki * params.kw + kj] * v;
                }
            }
            i += row;
        }
    } else {
        for (var ki = 0u; ki < params.kh; ki++) {
            let sy = border(i32(y + ki) - i32(ay), i32(h));
            for (var kj = 0u; kj < params.kw; kj++) {
                let sx = border(i32(x + kj) - i32(ax), i32(w));
                var v = params.cval;
                if (sy >= 0 && sx >= 0) {
                    v = load(plane + u32(sy) * row + u32(sx) * col);
                }
                sum += weights[ki * params.kw + kj] * v;
                if (GRADIENT) {
                    sum_y += weights[size + ki * params.kw + kj] * v;
                }
            }
        }
    }
    if (GRADIENT) {
        return sqrt(sum * sum + sum_y * sum_y);
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
