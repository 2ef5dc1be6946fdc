//! parts: linalg/register_tile
// conv2d as an implicit GEMM (NCHW): out[co, p] = sum_k w[co, k] * x_patch[k, p] + bias[co]
// where p = (n, oh, ow) runs over output pixels and k = (ci, ky, kx) over the receptive field.
// The patch column x_patch[k, p] is gathered from x on the fly while filling workgroup
// memory, so no im2col buffer exists. A workgroup of WX x WY invocations owns a tile of
// BM = 8*WY output channels by BN = 8*WX pixels; each invocation accumulates 8 x 8 outputs
// in registers. K is walked BK at a time with double-buffered tiles and the next tile
// prefetched into registers while the current one is multiplied (one barrier per step).
// Everything an invocation keeps in registers is a named variable indexed by constants, and
// the k loop over a tile is unrolled by hand: naga bounds every loop with a counter, which
// stops the driver from unrolling it, and runtime-indexed private arrays end up in local
// memory on NVIDIA.
// Grid: (pixel tiles, channel tiles, groups * splits). With splits > 1 each z-slice sums a
// contiguous range of K tiles into its own f32 slab of `out` (split-K for layers whose
// output is too small to fill the GPU); conv2d_splitk.wgsl adds the slabs and the bias.
// ADD folds what follows the conv into its epilogue: 1 adds `addend` of the output's shape
// (a residual), 2 one value per (image, channel), addend[n * c_out + co] (a time embedding).
// PROLOGUE applies what precedes the conv to each value of x as it is gathered
// (gpustd/nn/prologue.py): 1 y = (x - t.x) * t.y + t.z with t = norm[image * c_in + ci]
// (a GroupNorm), 2 the same then SiLU; values of the zero padding stay zero. UP_SHIFT 1
// reads x upsampled 2x (nearest) without writing it: params.h, params.w are the upsampled
// size, x holds (h >> 1) x (w >> 1) values a channel. x_offset: where the first image read
// starts in x (a run of a larger batch's images, read in place; 0 for the whole batch).
alias T = f32;  // element type of x, w and bias
alias O = f32;  // element type of out: T, or f32 for split-K partial sums
alias WV = vec4<T>;  // weights as bound: vec4<T> with VEC_W (k_total % 4 == 0), else T
override WX: u32 = 16u;  // invocations along pixels: 8, 16 or 32
override WY: u32 = 16u;  // invocations along output channels: 8 or 16
override KH: u32 = 3u;
override KW: u32 = 3u;
override HAS_BIAS: bool = true;
override BK: u32 = 8u;  // K step: 8 or 16; 8 * BK / WX and 8 * BK / WY must be 4, 8 or 16
override VEC_W: bool = true;  // weight rows are whole vec4s (k_total % 4 == 0)
override ADD: u32 = 0u;  // 0: none, 1: residual, 2: per (image, channel); never with split-K
override PROLOGUE: u32 = 0u;  // 0: none, 1: per-channel affine map, 2: the map then SiLU
override UP_SHIFT: u32 = 0u;  // 1: x read upsampled 2x (nearest)

struct Params {
    c_in: u32, h: u32, w: u32,  // input channels (all groups) and size
    c_out: u32, ho: u32, wo: u32,  // output channels (all groups) and size
    cin_g: u32, cout_g: u32,  // channels per group
    k_total: u32,  // cin_g * KH * KW
    pixels: u32,  // n * ho * wo
    splits: u32, k_tiles_per_split: u32,
    stride_h: u32, stride_w: u32,
    pad_h: u32, pad_w: u32,
    dil_h: u32, dil_w: u32,
    x_offset: u32,  // elements of x before the first image read
}

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> wt: array<WV>;
@group(0) @binding(2) var<storage, read> bias: array<T>;
@group(0) @binding(3) var<storage, read> addend: array<T>;
@group(0) @binding(4) var<storage, read_write> out: array<O>;
@group(0) @binding(5) var<storage, read> norm: array<vec4<f32>>;  // [N * C_in] with PROLOGUE
@group(0) @binding(6) var<uniform> params: Params;

// Two buffers of [k][m / 4] (A) and [k][n / 4] (B): one vec4 read hands an invocation 4 of
// its channels (pixels).
var<workgroup> a_tile: array<vec4<f32>, 4u * BK * WY>;
var<workgroup> b_tile: array<vec4<f32>, 4u * BK * WX>;

// The accumulators c{row}{half} (shaders/linalg/register_tile.wgsl, shared with gemm.wgsl):
// row = channel i of the invocation's 8, half = pixels 0-3 / 4-7.

// Geometry of this invocation's loads, fixed for the whole K loop.
var<private> a_valid: bool;
var<private> a_base: u32;  // w offset of the loaded row
var<private> ih0: i32;  // input row of tap (0, 0); far negative for a pixel past the end
var<private> iw0: i32;
var<private> x_base: u32;
var<private> norm_base: u32;  // norm row of this pixel's image and the group's first channel
var<private> hw_in: u32;  // values of one channel of x
var<private> w_in: u32;  // values of one row of x
var<private> tx: u32;
var<private> ty: u32;

// k step kk of the tiles at a_at / b_at.
fn k_step(a_at: u32, b_at: u32, kk: u32) {
    let a_lo = a_tile[a_at + kk * 2u * WY + ty];
    let a_hi = a_tile[a_at + kk * 2u * WY + WY + ty];
    let b0 = b_tile[b_at + kk * 2u * WX + tx];
    let b1 = b_tile[b_at + kk * 2u * WX + WX + tx];
    outer(a_lo, a_hi, b0, b1);
}

// `vec4<T>(wt[i])` is the identity with VEC_W and a splat without, so both branches
// type-check under either binding type; the override picks one at pipeline creation.
fn load_w(k: u32) -> f32 {
    if (a_valid && k < params.k_total) {
        return f32(vec4<T>(wt[a_base + k]).x);
    }
    return 0.0;
}

// Four consecutive k (k % 4 == 0) of this invocation's weight row.
fn load_w4(k: u32) -> vec4<f32> {
    if (VEC_W) {
        if (a_valid && k < params.k_total) {
            return vec4<f32>(vec4<T>(wt[(a_base + k) / 4u]));
        }
        return vec4<f32>(0.0);
    }
    return vec4<f32>(load_w(k), load_w(k + 1u), load_w(k + 2u), load_w(k + 3u));
}

// k / (KH * KW) and r / KW.
fn tap_channel(k: u32) -> u32 {
    return k / (KH * KW);
}

fn tap_row(r: u32) -> u32 {
    return r / KW;
}

// x_patch[k, this invocation's pixel]: unsigned compares catch both sides of the padding
// and the far-negative ih0 of a pixel past the end. Decoding k here, per value, measured
// 10-20% faster on an H200 than reading it from a per-tile table of decoded taps in
// workgroup memory. The gather is the costly part of the loop, which is why the planner
// favours 128 x 64 tiles (4 patch values per invocation and step, against 8 for 64 x 128).
fn load_x(k: u32, t: vec4<f32>) -> f32 {
    let ci = tap_channel(k);
    let r = k - ci * (KH * KW);
    let ky = tap_row(r);
    let kx = r - ky * KW;
    let ih = u32(ih0 + i32(ky * params.dil_h));
    let iw = u32(iw0 + i32(kx * params.dil_w));
    if (ih < params.h && iw < params.w && k < params.k_total) {
        let v = f32(x[x_base + ci * hw_in + (ih >> UP_SHIFT) * w_in + (iw >> UP_SHIFT)]);
        if (PROLOGUE == 0u) {
            return v;
        }
        let y = fma(v - t.x, t.y, t.z);  // t: the prologue's entry of channel ci
        if (PROLOGUE == 2u) {
            return y / (1.0 + exp(-y));
        }
        return y;
    }
    return 0.0;  // padding (after the prologue: the conv pads its normalized input)
}

// The prologue's table entry of channel ci of this pixel's image (clamped: a k past K
// reads no value).
fn entry(ci: u32) -> vec4<f32> {
    if (PROLOGUE == 0u) {
        return vec4<f32>(0.0);
    }
    return norm[norm_base + min(ci, params.cin_g - 1u)];
}

// Four k rows (stride `step`) of this invocation's patch column. Their channels' table
// entries are loaded once each where the four span at most two channels (a 3x3 conv's):
// on lavapipe a storage load of a per-lane address is the gather's cost.
fn load_x4(k: u32, step: u32) -> vec4<f32> {
    let c0 = tap_channel(k);
    let c3 = tap_channel(k + 3u * step);
    let t0 = entry(c0);
    var t1 = t0;
    var t2 = t0;
    var t3 = t0;
    if (PROLOGUE != 0u && c3 != c0) {
        t3 = entry(c3);
        if (c3 == c0 + 1u) {
            t1 = select(t0, t3, tap_channel(k + step) != c0);
            t2 = select(t0, t3, tap_channel(k + 2u * step) != c0);
        } else {
            t1 = entry(tap_channel(k + step));
            t2 = entry(tap_channel(k + 2u * step));
        }
    }
    return vec4<f32>(load_x(k, t0), load_x(k + step, t1), load_x(k + 2u * step, t2),
                     load_x(k + 3u * step, t3));
}

fn put_a(i: u32, v: f32) {
    a_tile[i / 4u][i % 4u] = v;
}

fn put_b(i: u32, v: f32) {
    b_tile[i / 4u][i % 4u] = v;
}

// Four consecutive k (rows of the transposed tile at `at`, element offset) of weight row `row`.
fn put_a4(at: u32, k: u32, row: u32, v: vec4<f32>) {
    let bm = 8u * WY;
    put_a(at + k * bm + row, v.x);
    put_a(at + (k + 1u) * bm + row, v.y);
    put_a(at + (k + 2u) * bm + row, v.z);
    put_a(at + (k + 3u) * bm + row, v.w);
}

fn put_b4(at: u32, k: u32, step: u32, col: u32, v: vec4<f32>) {
    let bn = 8u * WX;
    put_b(at + k * bn + col, v.x);
    put_b(at + (k + step) * bn + col, v.y);
    put_b(at + (k + 2u * step) * bn + col, v.z);
    put_b(at + (k + 3u * step) * bn + col, v.w);
}

// Pixels p..p+3 (p % 4 == 0, image `img`, offset `rem` in it) of channel co: four
// neighbouring stores when they lie in one image, one by one at a ragged end.
fn store4(p: u32, img: u32, rem: u32, co: u32, v: vec4<f32>, b: f32, slab: u32, hw_out: u32) {
    if (p >= params.pixels) {
        return;
    }
    if (rem + 3u < hw_out && p + 3u < params.pixels) {
        let o = slab + (img * params.c_out + co) * hw_out + rem;
        var e = vec4<f32>(0.0);
        if (ADD == 1u) {
            e = vec4<f32>(f32(addend[o]), f32(addend[o + 1u]), f32(addend[o + 2u]),
                          f32(addend[o + 3u]));
        } else if (ADD == 2u) {
            e = vec4<f32>(f32(addend[img * params.c_out + co]));
        }
        out[o] = O(v.x + b + e.x);
        out[o + 1u] = O(v.y + b + e.y);
        out[o + 2u] = O(v.z + b + e.z);
        out[o + 3u] = O(v.w + b + e.w);
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        let q = p + j;
        if (q < params.pixels) {
            let nc = (q / hw_out) * params.c_out + co;
            let o = slab + nc * hw_out + q % hw_out;
            var e = 0.0;
            if (ADD == 1u) { e = f32(addend[o]); } else if (ADD == 2u) { e = f32(addend[nc]); }
            out[o] = O(v[j] + b + e);
        }
    }
}

fn store(m: u32, v0: vec4<f32>, v1: vec4<f32>, group: u32, slab: u32, hw_out: u32,
         px: vec4<u32>, px1: vec2<u32>) {
    if (m >= params.cout_g) {
        return;
    }
    let co = group * params.cout_g + m;
    var b = 0.0;
    if (HAS_BIAS) {  // off for split-K partial sums
        b = f32(bias[co]);
    }
    store4(px.x, px.y, px.z, co, v0, b, slab, hw_out);
    store4(px.w, px1.x, px1.y, co, v1, b, slab, hw_out);
}

@compute @workgroup_size(WX * WY)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bm = 8u * WY;
    let bn = 8u * WX;
    let threads = WX * WY;
    tx = lid % WX;
    ty = lid / WX;
    let group = wid.z / params.splits;
    let split = wid.z % params.splits;
    let m0 = wid.y * bm;
    let p0 = wid.x * bn;
    let hw_out = params.ho * params.wo;

    // A (weights): LA = 8 * BK / WX consecutive k of one row per invocation.
    let la = bm * BK / threads;
    let a_row = lid / (BK / la);
    let a_k = (lid % (BK / la)) * la;
    a_valid = m0 + a_row < params.cout_g;
    a_base = (group * params.cout_g + m0 + a_row) * params.k_total;

    // B (patches): one pixel column per invocation and LB = 8 * BK / WY of its k rows
    // (stride b_step), so the pixel is decoded once; neighbouring invocations read
    // neighbouring x.
    let lb = bn * BK / threads;
    let b_col = lid % bn;
    let b_row0 = lid / bn;
    let b_step = threads / bn;
    let pixel = p0 + b_col;
    let hw = pixel % hw_out;
    ih0 = i32((hw / params.wo) * params.stride_h) - i32(params.pad_h);
    iw0 = i32((hw % params.wo) * params.stride_w) - i32(params.pad_w);
    if (pixel >= params.pixels) {
        ih0 = -0x40000000;
    }
    norm_base = (pixel / hw_out) * params.c_in + group * params.cin_g;
    w_in = params.w >> UP_SHIFT;
    hw_in = (params.h >> UP_SHIFT) * w_in;
    x_base = norm_base * hw_in + params.x_offset;

    let k_tiles = (params.k_total + BK - 1u) / BK;
    let t_begin = split * params.k_tiles_per_split;
    let t_end = min(t_begin + params.k_tiles_per_split, k_tiles);
    let a_size = BK * bm;  // elements of one A buffer
    let b_size = BK * bn;

    var a_reg0 = vec4<f32>(0.0);
    var a_reg1 = vec4<f32>(0.0);
    var a_reg2 = vec4<f32>(0.0);
    var a_reg3 = vec4<f32>(0.0);
    var b_reg0 = vec4<f32>(0.0);
    var b_reg1 = vec4<f32>(0.0);
    var b_reg2 = vec4<f32>(0.0);
    var b_reg3 = vec4<f32>(0.0);
    // Iteration t fetches tile t (t < t_end) while multiplying tile t - 1, which the
    // previous iteration stored; alternating buffers make one barrier per step enough.
    for (var t = t_begin; t <= t_end; t++) {
        if (t < t_end) {
            let ka = t * BK + a_k;
            a_reg0 = load_w4(ka);
            if (la > 4u) {
                a_reg1 = load_w4(ka + 4u);
            }
            if (la > 8u) {
                a_reg2 = load_w4(ka + 8u);
                a_reg3 = load_w4(ka + 12u);
            }
            let kb = t * BK + b_row0;
            b_reg0 = load_x4(kb, b_step);
            if (lb > 4u) {
                b_reg1 = load_x4(kb + 4u * b_step, b_step);
            }
            if (lb > 8u) {
                b_reg2 = load_x4(kb + 8u * b_step, b_step);
                b_reg3 = load_x4(kb + 12u * b_step, b_step);
            }
        }
        if (t > t_begin) {
            let a_at = ((t - 1u) & 1u) * (a_size / 4u);
            let b_at = ((t - 1u) & 1u) * (b_size / 4u);
            // The whole tile, unrolled (a loop of 4-step bodies was 10-15% slower, a loop of
            // single steps 25-30% slower on an H200).
            k_step(a_at, b_at, 0u); k_step(a_at, b_at, 1u);
            k_step(a_at, b_at, 2u); k_step(a_at, b_at, 3u);
            k_step(a_at, b_at, 4u); k_step(a_at, b_at, 5u);
            k_step(a_at, b_at, 6u); k_step(a_at, b_at, 7u);
            if (BK > 8u) {
                k_step(a_at, b_at, 8u); k_step(a_at, b_at, 9u);
                k_step(a_at, b_at, 10u); k_step(a_at, b_at, 11u);
                k_step(a_at, b_at, 12u); k_step(a_at, b_at, 13u);
                k_step(a_at, b_at, 14u); k_step(a_at, b_at, 15u);
            }
        }
        if (t < t_end) {
            let sa = (t & 1u) * a_size;
            let sb = (t & 1u) * b_size;
            put_a4(sa, a_k, a_row, a_reg0);
            put_b4(sb, b_row0, b_step, b_col, b_reg0);
            if (la > 4u) {
                put_a4(sa, a_k + 4u, a_row, a_reg1);
            }
            if (la > 8u) {
                put_a4(sa, a_k + 8u, a_row, a_reg2);
                put_a4(sa, a_k + 12u, a_row, a_reg3);
            }
            if (lb > 4u) {
                put_b4(sb, b_row0 + 4u * b_step, b_step, b_col, b_reg1);
            }
            if (lb > 8u) {
                put_b4(sb, b_row0 + 8u * b_step, b_step, b_col, b_reg2);
                put_b4(sb, b_row0 + 12u * b_step, b_step, b_col, b_reg3);
            }
        }
        workgroupBarrier();
    }

    // Rows: channels m0 + ty*4 + i and m0 + 4*WY + ty*4 + i; pixels p0 + tx*4 (+ 4*WX),
    // each half's image and offset in it decoded once for all eight rows.
    let slab = split * params.pixels * params.c_out;
    let q0 = p0 + tx * 4u;
    let q1 = q0 + 4u * WX;
    let px = vec4<u32>(q0, q0 / hw_out, q0 % hw_out, q1);
    let px1 = vec2<u32>(q1 / hw_out, q1 % hw_out);
    let r0 = m0 + ty * 4u;
    let r1 = r0 + 4u * WY;
    store(r0, c00, c01, group, slab, hw_out, px, px1);
    store(r0 + 1u, c10, c11, group, slab, hw_out, px, px1);
    store(r0 + 2u, c20, c21, group, slab, hw_out, px, px1);
    store(r0 + 3u, c30, c31, group, slab, hw_out, px, px1);
    store(r1, c40, c41, group, slab, hw_out, px, px1);
    store(r1 + 1u, c50, c51, group, slab, hw_out, px, px1);
    store(r1 + 2u, c60, c61, group, slab, hw_out, px, px1);
    store(r1 + 3u, c70, c71, group, slab, hw_out, px, px1);
}
