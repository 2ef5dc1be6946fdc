// conv2d as an implicit GEMM (NCHW): out[co, p] = sum_k w[co, k] * x_patch[k, p] + bias[co]
// where p = (n, oh, ow) runs over output pixels and k = (ci, ky, kx) over the receptive field.
// The patch column x_patch[k, p] is gathered from x on the fly while filling workgroup
// memory, so no im2col buffer exists. A workgroup of 16 x 16 invocations owns a tile of
// BM = 16*TM output channels by BN = 16*TN pixels; each invocation accumulates TM x TN
// outputs in registers (TM, TN multiples of 4). K is walked BK at a time with double
// buffered tiles and the next tile prefetched into registers while the current one is
// multiplied, so one barrier per K step suffices.
// Grid: (pixel tiles, channel tiles, groups * SPLITS). With SPLITS > 1 each z-slice sums a
// contiguous range of K tiles into its own f32 slab of `out` (split-K for layers whose
// output is too small to fill the GPU); conv2d_splitk.wgsl adds the slabs and the bias.
alias T = f32;  // element type of x, w and bias
alias O = f32;  // element type of out: T, or f32 for split-K partial sums
override TM: u32 = 8u;
override TN: u32 = 8u;
override KH: u32 = 3u;
override KW: u32 = 3u;
override HAS_BIAS: bool = true;
override SPLITS: u32 = 1u;
const BK: u32 = 8u;
const WX: u32 = 16u;  // invocations along pixels
const WY: u32 = 16u;  // invocations along output channels
const MAX_B: u32 = 128u;  // largest BM or BN (TM, TN <= 8)

struct Params {
    c_in: u32, h: u32, w: u32,  // input channels (all groups) and size
    c_out: u32, ho: u32, wo: u32,  // output channels (all groups) and size
    cin_g: u32, cout_g: u32,  // channels per group
    k_total: u32,  // cin_g * KH * KW
    pixels: u32,  // n * ho * wo
    k_tiles_per_split: u32,
    stride_h: u32, stride_w: u32,
    pad_h: u32, pad_w: u32,
    dil_h: u32, dil_w: u32,
}

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> wt: array<T>;
@group(0) @binding(2) var<storage, read> bias: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<O>;
@group(0) @binding(4) var<uniform> params: Params;

// [buffer][k][m / 4]: one vec4 read hands an invocation 4 of its channels (or pixels).
var<workgroup> a_tile: array<array<vec4<f32>, BK * MAX_B / 4>, 2>;
var<workgroup> b_tile: array<array<vec4<f32>, BK * MAX_B / 4>, 2>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bm = WY * TM;
    let bn = WX * TN;
    let tx = lid % WX;
    let ty = lid / WX;
    let group = wid.z / SPLITS;
    let split = wid.z % SPLITS;
    let m0 = wid.y * bm;  // first output channel of the tile, within the group
    let p0 = wid.x * bn;  // first output pixel of the tile
    let hw_out = params.ho * params.wo;
    let hw_in = params.h * params.w;

    // A (weights): each invocation loads A_PER consecutive k of one channel row; rows of w
    // are contiguous in k, so a row's BK values fill whole 32-byte sectors.
    let a_per = bm * BK / 256u;
    let a_row = lid / (BK / a_per);
    let a_k = (lid % (BK / a_per)) * a_per;
    let a_channel = m0 + a_row;
    let a_valid = a_channel < params.cout_g;
    let a_base = (group * params.cout_g + a_channel) * params.k_total;

    // B (patches): each invocation owns one pixel column and B_PER k rows of it, so the
    // pixel's coordinates are decoded once; neighbouring invocations read neighbouring x.
    let b_per = bn * BK / 256u;
    let b_col = lid % bn;
    let b_row0 = lid / bn;
    let b_rows_step = 256u / bn;
    let pixel = p0 + b_col;
    let p_valid = pixel < params.pixels;
    let n = pixel / hw_out;
    let hw = pixel % hw_out;
    let ih0 = i32((hw / params.wo) * params.stride_h) - i32(params.pad_h);
    let iw0 = i32((hw % params.wo) * params.stride_w) - i32(params.pad_w);
    let x_base = (n * params.c_in + group * params.cin_g) * hw_in;

    let k_tiles = (params.k_total + BK - 1u) / BK;
    let t_begin = split * params.k_tiles_per_split;
    let t_end = min(t_begin + params.k_tiles_per_split, k_tiles);

    var a_reg: array<f32, 4>;
    var b_reg: array<f32, 4>;
    var acc: array<vec4<f32>, 16>;
    // Loop t fetches tile t into registers (t < t_end) while multiplying tile t - 1, which the
    // previous iteration stored; alternating buffers make one barrier per step enough.
    for (var t = t_begin; t <= t_end; t++) {
        if (t < t_end) {
            let k0 = t * BK;
            for (var i = 0u; i < a_per; i++) {
                let k = k0 + a_k + i;
                var v = 0.0;
                if (a_valid && k < params.k_total) {
                    v = f32(wt[a_base + k]);
                }
                a_reg[i] = v;
            }
            for (var i = 0u; i < b_per; i++) {
                let k = k0 + b_row0 + i * b_rows_step;
                let ci = k / (KH * KW);
                let r = k % (KH * KW);
                let ih = ih0 + i32((r / KW) * params.dil_h);
                let iw = iw0 + i32((r % KW) * params.dil_w);
                var v = 0.0;
                if (p_valid && k < params.k_total && ih >= 0 && ih < i32(params.h)
                    && iw >= 0 && iw < i32(params.w)) {
                    v = f32(x[x_base + ci * hw_in + u32(ih) * params.w + u32(iw)]);
                }
                b_reg[i] = v;
            }
        }
        if (t > t_begin) {
            let cb = (t - 1u) & 1u;
            for (var kk = 0u; kk < BK; kk++) {
                var a: array<vec4<f32>, 2>;
                var b: array<vec4<f32>, 2>;
                for (var q = 0u; q < TM / 4u; q++) {
                    a[q] = a_tile[cb][kk * (bm / 4u) + q * WY + ty];
                }
                for (var q = 0u; q < TN / 4u; q++) {
                    b[q] = b_tile[cb][kk * (bn / 4u) + q * WX + tx];
                }
                for (var i = 0u; i < TM; i++) {
                    let av = vec4<f32>(a[i / 4u][i % 4u]);
                    for (var q = 0u; q < TN / 4u; q++) {
                        acc[i * (TN / 4u) + q] = fma(av, b[q], acc[i * (TN / 4u) + q]);
                    }
                }
            }
        }
        if (t < t_end) {
            let sb = t & 1u;
            for (var i = 0u; i < a_per; i++) {
                let idx = (a_k + i) * bm + a_row;
                a_tile[sb][idx / 4u][idx % 4u] = a_reg[i];
            }
            for (var i = 0u; i < b_per; i++) {
                let idx = (b_row0 + i * b_rows_step) * bn + b_col;
                b_tile[sb][idx / 4u][idx % 4u] = b_reg[i];
            }
        }
        workgroupBarrier();
    }

    // Epilogue: invocation rows are channels q*64 + ty*4 + i%4, columns pixels q*64 + tx*4 + j.
    let slab = split * params.pixels * params.c_out;
    for (var i = 0u; i < TM; i++) {
        let channel = m0 + (i / 4u) * (WY * 4u) + ty * 4u + i % 4u;
        if (channel >= params.cout_g) {
            continue;
        }
        let co = group * params.cout_g + channel;
        var bias_value = 0.0;
        if (HAS_BIAS && SPLITS == 1u) {
            bias_value = f32(bias[co]);
        }
        for (var q = 0u; q < TN / 4u; q++) {
            let v = acc[i * (TN / 4u) + q];
            for (var j = 0u; j < 4u; j++) {
                let p = p0 + q * (WX * 4u) + tx * 4u + j;
                if (p < params.pixels) {
                    let pn = p / hw_out;
                    let o = slab + (pn * params.c_out + co) * hw_out + p % hw_out;
                    out[o] = O(v[j] + bias_value);
                }
            }
        }
    }
}
