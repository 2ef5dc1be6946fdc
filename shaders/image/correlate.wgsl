//! parts: image/planes
// 2-D correlation of every channel plane with one kh x kw kernel (scipy.ndimage.correlate):
// out(c, y, x) = sum_{i,j} k[i, j] * src(c, y + i - anchor_y, x + j - anchor_x), with the image
// extended past its edges by the border mode. A 1 x k or k x 1 kernel is one separable pass.
// With GRADIENT, `weights` holds two kernels (d/dx then d/dy, e.g. Sobel) and the result is the
// gradient magnitude sqrt(gx^2 + gy^2), so no gx/gy images are ever stored.
//
// Layouts, uint8 packing, the reads and the writes: image/planes (this kernel's part).
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
    let p = place(j, h, w, h, w);
    let size = params.kh * params.kw;
    var sum = 0.0;
    var sum_y = 0.0;
    let ay = params.anchor_y;
    let ax = params.anchor_x;
    if (p.y >= ay && p.y + params.kh <= h + ay && p.x >= ax && p.x + params.kw <= w + ax) {
        // Interior: the whole window is inside the image, no border arithmetic per tap.
        var i = p.plane + (p.y - ay) * p.row + (p.x - ax) * p.col;
        for (var ki = 0u; ki < params.kh; ki++) {
            for (var kj = 0u; kj < params.kw; kj++) {
                let v = load(i + kj * p.col);
                sum += weights[ki * params.kw + kj] * v;
                if (GRADIENT) {
                    sum_y += weights[size + ki * params.kw + kj] * v;
                }
            }
            i += p.row;
        }
    } else {
        for (var ki = 0u; ki < params.kh; ki++) {
            let sy = border(i32(p.y + ki) - i32(ay), i32(h));
            for (var kj = 0u; kj < params.kw; kj++) {
                let sx = border(i32(p.x + kj) - i32(ax), i32(w));
                var v = params.cval;
                if (sy >= 0 && sx >= 0) {
                    v = load(p.plane + u32(sy) * p.row + u32(sx) * p.col);
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
    put((wid.y * nwg.x + wid.x) * WG + lid);
}
