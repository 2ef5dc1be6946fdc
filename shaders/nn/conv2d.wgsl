// conv2d as an implicit GEMM (NCHW): out[co, p] = sum_k w[co, k] * x_patch[k, p] + bias[co]
// where p = (n, oh, ow) runs over output pixels and k = (ci, ky, kx) over the receptive field.
// The patch column x_patch[k, p] is gathered from x on the fly while filling workgroup
// memory, so no im2col buffer exists. A workgroup of WX x WY invocations owns a tile of
// BM = 8*WY output channels by BN = 8*WX pixels; each invocation accumulates 8 x 8 outputs
// in registers. K is walked BK at a time with double-buffered tiles and the next tile
// prefetched into registers while the current one is multiplied (one barrier per step).
// Everything an invocation keeps in registers is a named variable indexed by constants:
// naga's loops over runtime-indexed private arrays end up in local memory on NVIDIA.
// Grid: (pixel tiles, channel tiles, groups * splits). With splits > 1 each z-slice sums a
// contiguous range of K tiles into its own f32 slab of `out` (split-K for layers whose
// output is too small to fill the GPU); conv2d_splitk.wgsl adds the slabs and the bias.
alias T = f32;  // element type of x, w and bias
alias O = f32;  // element type of out: T, or f32 for split-K partial sums
override WX: u32 = 16u;  // invocations along pixels: 8 or 16
override WY: u32 = 16u;  // invocations along output channels: 8 or 16
override KH: u32 = 3u;
override KW: u32 = 3u;
override HAS_BIAS: bool = true;
override BK: u32 = 8u;  // K step: 8, or 16 with 16 x 16 invocations
const MAX_BK: u32 = 16u;
const MAX_B: u32 = 128u;  // largest BM or BN

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
}

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> wt: array<T>;
@group(0) @binding(2) var<storage, read> bias: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<O>;
@group(0) @binding(4) var<uniform> params: Params;

// [buffer][k * B / 4 + m / 4]: one vec4 read hands an invocation 4 of its channels (pixels).
var<workgroup> a_tile: array<array<vec4<f32>, MAX_BK * MAX_B / 4>, 2>;
var<workgroup> b_tile: array<array<vec4<f32>, MAX_BK * MAX_B / 4>, 2>;

// Accumulators: c{row}{half}, row = channel i of the invocation's 8, half = pixels 0-3 / 4-7.
var<private> c00: vec4<f32>; var<private> c01: vec4<f32>;
var<private> c10: vec4<f32>; var<private> c11: vec4<f32>;
var<private> c20: vec4<f32>; var<private> c21: vec4<f32>;
var<private> c30: vec4<f32>; var<private> c31: vec4<f32>;
var<private> c40: vec4<f32>; var<private> c41: vec4<f32>;
var<private> c50: vec4<f32>; var<private> c51: vec4<f32>;
var<private> c60: vec4<f32>; var<private> c61: vec4<f32>;
var<private> c70: vec4<f32>; var<private> c71: vec4<f32>;

// Geometry of this invocation's loads, fixed for the whole K loop.
var<private> a_valid: bool;
var<private> a_base: u32;  // w offset of the loaded row
var<private> a_k: u32;  // first k of the row segment it loads
var<private> p_valid: bool;
var<private> ih0: i32;
var<private> iw0: i32;
var<private> x_base: u32;
var<private> b_row0: u32;

fn outer(a: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, a_hi: vec4<f32>) {
    c00 = fma(vec4<f32>(a.x), b0, c00); c01 = fma(vec4<f32>(a.x), b1, c01);
    c10 = fma(vec4<f32>(a.y), b0, c10); c11 = fma(vec4<f32>(a.y), b1, c11);
    c20 = fma(vec4<f32>(a.z), b0, c20); c21 = fma(vec4<f32>(a.z), b1, c21);
    c30 = fma(vec4<f32>(a.w), b0, c30); c31 = fma(vec4<f32>(a.w), b1, c31);
    c40 = fma(vec4<f32>(a_hi.x), b0, c40); c41 = fma(vec4<f32>(a_hi.x), b1, c41);
    c50 = fma(vec4<f32>(a_hi.y), b0, c50); c51 = fma(vec4<f32>(a_hi.y), b1, c51);
    c60 = fma(vec4<f32>(a_hi.z), b0, c60); c61 = fma(vec4<f32>(a_hi.z), b1, c61);
    c70 = fma(vec4<f32>(a_hi.w), b0, c70); c71 = fma(vec4<f32>(a_hi.w), b1, c71);
}

fn load_w(k: u32) -> f32 {
    if (a_valid && k < params.k_total) {
        return f32(wt[a_base + k]);
    }
    return 0.0;
}

fn load_x(k: u32) -> f32 {
    let ci = k / (KH * KW);
    let r = k % (KH * KW);
    let ih = ih0 + i32((r / KW) * params.dil_h);
    let iw = iw0 + i32((r % KW) * params.dil_w);
    if (p_valid && k < params.k_total && ih >= 0 && ih < i32(params.h) && iw >= 0
        && iw < i32(params.w)) {
        return f32(x[x_base + ci * params.h * params.w + u32(ih) * params.w + u32(iw)]);
    }
    return 0.0;
}

// Four consecutive k of this invocation's weight row.
fn load_w4(k0: u32) -> vec4<f32> {
    let k = k0 + a_k;
    return vec4<f32>(load_w(k), load_w(k + 1u), load_w(k + 2u), load_w(k + 3u));
}

// Four k rows (stride `step`) of this invocation's patch column.
fn load_x4(k: u32, step: u32) -> vec4<f32> {
    return vec4<f32>(load_x(k), load_x(k + step), load_x(k + 2u * step), load_x(k + 3u * step));
}

fn put(tile_is_a: bool, sb: u32, i: u32, v: f32) {
    if (tile_is_a) {
        a_tile[sb][i / 4u][i % 4u] = v;
    } else {
        b_tile[sb][i / 4u][i % 4u] = v;
    }
}

// Four consecutive k (rows of the transposed tile) of weight row `row`.
fn put_a4(sb: u32, k: u32, row: u32, bm: u32, v: vec4<f32>) {
    put(true, sb, k * bm + row, v.x);
    put(true, sb, (k + 1u) * bm + row, v.y);
    put(true, sb, (k + 2u) * bm + row, v.z);
    put(true, sb, (k + 3u) * bm + row, v.w);
}

fn put_b4(sb: u32, k: u32, step: u32, col: u32, bn: u32, v: vec4<f32>) {
    put(false, sb, k * bn + col, v.x);
    put(false, sb, (k + step) * bn + col, v.y);
    put(false, sb, (k + 2u * step) * bn + col, v.z);
    put(false, sb, (k + 3u * step) * bn + col, v.w);
}

fn store_row(p0: u32, v: vec4<f32>, bias_value: f32, slab: u32, co: u32,
             hw_out: u32) {
    for (var j = 0u; j < 4u; j++) {
        let p = p0 + j;
        if (p < params.pixels) {
            let o = slab + ((p / hw_out) * params.c_out + co) * hw_out + p % hw_out;
            out[o] = O(v[j] + bias_value);
        }
    }
}

fn store(m: u32, px0: u32, px1: u32, v0: vec4<f32>, v1: vec4<f32>, group: u32, slab: u32,
         hw_out: u32) {
    if (m >= params.cout_g) {
        return;
    }
    let co = group * params.cout_g + m;
    var bias_value = 0.0;
    if (HAS_BIAS) {  // off for split-K partial sums
        bias_value = f32(bias[co]);
    }
    store_row(px0, v0, bias_value, slab, co, hw_out);
    store_row(px1, v1, bias_value, slab, co, hw_out);
}

@compute @workgroup_size(WX * WY)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bm = 8u * WY;
    let bn = 8u * WX;
    let threads = WX * WY;
    let tx = lid % WX;
    let ty = lid / WX;
    let group = wid.z / params.splits;
    let split = wid.z % params.splits;
    let m0 = wid.y * bm;
    let p0 = wid.x * bn;
    let hw_out = params.ho * params.wo;

    // A (weights): LA = bm*BK/threads (4 or 8) consecutive k of one row per invocation;
    // a row's BK values fill whole 32-byte sectors.
    let la = bm * BK / threads;
    let a_row = lid / (BK / la);
    a_k = (lid % (BK / la)) * la;
    a_valid = m0 + a_row < params.cout_g;
    a_base = (group * params.cout_g + m0 + a_row) * params.k_total;

    // B (patches): one pixel column per invocation and LB = bn*BK/threads of its k rows
    // (stride b_step), so the pixel is decoded once; neighbouring invocations read
    // neighbouring x.
    let lb = bn * BK / threads;
    let b_col = lid % bn;
    b_row0 = lid / bn;
    let b_step = threads / bn;
    let pixel = p0 + b_col;
    p_valid = pixel < params.pixels;
    let hw = pixel % hw_out;
    ih0 = i32((hw / params.wo) * params.stride_h) - i32(params.pad_h);
    iw0 = i32((hw % params.wo) * params.stride_w) - i32(params.pad_w);
    x_base = ((pixel / hw_out) * params.c_in + group * params.cin_g) * params.h * params.w;

    let k_tiles = (params.k_total + BK - 1u) / BK;
    let t_begin = split * params.k_tiles_per_split;
    let t_end = min(t_begin + params.k_tiles_per_split, k_tiles);

    var a_reg0 = vec4<f32>(0.0);
    var a_reg1 = vec4<f32>(0.0);
    var b_reg0 = vec4<f32>(0.0);
    var b_reg1 = vec4<f32>(0.0);
    // Iteration t fetches tile t (t < t_end) while multiplying tile t - 1, which the
    // previous iteration stored; alternating buffers make one barrier per step enough.
    for (var t = t_begin; t <= t_end; t++) {
        if (t < t_end) {
            let k0 = t * BK;
            a_reg0 = load_w4(k0);
            if (la == 8u) {
                a_reg1 = load_w4(k0 + 4u);
            }
            b_reg0 = load_x4(k0 + b_row0, b_step);
            if (lb == 8u) {
                b_reg1 = load_x4(k0 + b_row0 + 4u * b_step, b_step);
            }
        }
        if (t > t_begin) {
            let cb = (t - 1u) & 1u;
            for (var kk = 0u; kk < BK; kk++) {
                let a_lo = a_tile[cb][kk * (bm / 4u) + ty];
                let a_hi = a_tile[cb][kk * (bm / 4u) + WY + ty];
                let b0 = b_tile[cb][kk * (bn / 4u) + tx];
                let b1 = b_tile[cb][kk * (bn / 4u) + WX + tx];
                outer(a_lo, b0, b1, a_hi);
            }
        }
        if (t < t_end) {
            let sb = t & 1u;
            put_a4(sb, a_k, a_row, bm, a_reg0);
            put_b4(sb, b_row0, b_step, b_col, bn, b_reg0);
            if (la == 8u) {
                put_a4(sb, a_k + 4u, a_row, bm, a_reg1);
            }
            if (lb == 8u) {
                put_b4(sb, b_row0 + 4u * b_step, b_step, b_col, bn, b_reg1);
            }
        }
        workgroupBarrier();
    }

    // Rows: channels m0 + ty*4 + i and m0 + 4*WY + ty*4 + i; pixels p0 + tx*4 (+ 4*WX).
    let slab = split * params.pixels * params.c_out;
    let px0 = p0 + tx * 4u;
    let px1 = px0 + 4u * WX;
    let r0 = m0 + ty * 4u;
    let r1 = r0 + 4u * WY;
    store(r0, px0, px1, c00, c01, group, slab, hw_out);
    store(r0 + 1u, px0, px1, c10, c11, group, slab, hw_out);
    store(r0 + 2u, px0, px1, c20, c21, group, slab, hw_out);
    store(r0 + 3u, px0, px1, c30, c31, group, slab, hw_out);
    store(r1, px0, px1, c40, c41, group, slab, hw_out);
    store(r1 + 1u, px0, px1, c50, c51, group, slab, hw_out);
    store(r1 + 2u, px0, px1, c60, c61, group, slab, hw_out);
    store(r1 + 3u, px0, px1, c70, c71, group, slab, hw_out);
}
