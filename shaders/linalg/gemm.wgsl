// Batched GEMM: C = alpha * op(A) @ op(B) + beta * C + bias, op = optional transpose.
//
// Each workgroup computes a BM x BN tile of C, walking K in steps of BK through workgroup
// memory; each invocation owns a TM x TN block of that tile (register blocking, TM and TN 4
// or 8). Its rows and columns are 4-wide groups strided across the tile (row group ty and
// ty + BM/8), so neighbouring invocations read neighbouring vec4s of workgroup memory: no
// bank conflicts, 128-bit reads.
//
// A and B are read as vec4 when their contiguous dimension is a multiple of 4 (VEC_A, VEC_B
// and element types AV, BV = vec4<T>); otherwise AV = T (BV = T) and four scalars are read with
// per-element bounds checks. Transposes are folded into the load stage: the tile in workgroup memory is always
// [k][m] and [k][n]. Out-of-range elements load as 0, so ragged M, N, K need no special case.
alias T = f32;
alias AV = vec4<T>;
alias BV = vec4<T>;

override BM: u32 = 64u;
override BN: u32 = 64u;
override BK: u32 = 16u;
override TM: u32 = 4u;      // rows per invocation: 4 or 8
override TN: u32 = 4u;      // columns per invocation: 4 or 8
override WG: u32 = 256u;    // (BM / TM) * (BN / TN)
override TRANS_A: bool = false;
override TRANS_B: bool = false;
override VEC_A: bool = true;
override VEC_B: bool = true;

// Batch z (wid.z + z_base) splits into (outer, inner) = (z / inner, z % inner); operand
// offsets are base + outer * X_outer + inner * X_inner, so broadcast batch dims cost nothing.
struct Params {
    m: u32, n: u32, k: u32,
    a_base: u32, a_outer: u32, a_inner: u32,
    b_base: u32, b_outer: u32, b_inner: u32,
    c_base: u32, inner: u32, z_base: u32,
    alpha: f32, beta: f32, has_bias: u32,
}

@group(0) @binding(0) var<storage, read> a: array<AV>;
@group(0) @binding(1) var<storage, read> b: array<BV>;
@group(0) @binding(2) var<storage, read> bias: array<T>;
@group(0) @binding(3) var<storage, read_write> c: array<T>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> tile_a: array<vec4<f32>, BK * BM / 4u>;  // [k][m / 4]
var<workgroup> tile_b: array<vec4<f32>, BK * BN / 4u>;  // [k][n / 4]

// The accumulators live in private variables, not arrays: naga bounds every loop with a
// counter, so drivers cannot unroll loops and would keep a dynamically indexed array in slow
// local memory. Block (u, v) holds rows of row-group ty + u * BM/8 and columns of column-group
// tx + v * BN/8; element (row i, column j) of a block is c_uv[j][i]. With TM or TN = 4 the
// blocks on that side are never touched and the compiler drops them.
var<private> c00: mat4x4<f32>;
var<private> c01: mat4x4<f32>;
var<private> c10: mat4x4<f32>;
var<private> c11: mat4x4<f32>;

// Four consecutive elements along the contiguous dimension of a row-major rows x cols matrix.
// `vec4<T>(a[i])` is a splat in scalar mode and the identity in vec4 mode, so both branches
// type-check under either alias; the override picks one at pipeline creation.
fn load_a(base: u32, r: u32, col: u32, rows: u32, cols: u32) -> vec4<f32> {
    if (r >= rows || col >= cols) { return vec4<f32>(0.0); }
    let i = base + r * cols + col;
    if (VEC_A) { return vec4<f32>(vec4<T>(a[i / 4u])); }
    let last = cols - col;  // >= 1
    return vec4<f32>(f32(vec4<T>(a[i]).x),
                     select(0.0, f32(vec4<T>(a[i + 1u]).x), last > 1u),
                     select(0.0, f32(vec4<T>(a[i + 2u]).x), last > 2u),
                     select(0.0, f32(vec4<T>(a[i + 3u]).x), last > 3u));
}

fn load_b(base: u32, r: u32, col: u32, rows: u32, cols: u32) -> vec4<f32> {
    if (r >= rows || col >= cols) { return vec4<f32>(0.0); }
    let i = base + r * cols + col;
    if (VEC_B) { return vec4<f32>(vec4<T>(b[i / 4u])); }
    let last = cols - col;
    return vec4<f32>(f32(vec4<T>(b[i]).x),
                     select(0.0, f32(vec4<T>(b[i + 1u]).x), last > 1u),
                     select(0.0, f32(vec4<T>(b[i + 2u]).x), last > 2u),
                     select(0.0, f32(vec4<T>(b[i + 3u]).x), last > 3u));
}

// c += outer(x, y): column j gains x * y[j].
fn outer_fma(c: mat4x4<f32>, x: vec4<f32>, y: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(fma(x, vec4<f32>(y.x), c[0]), fma(x, vec4<f32>(y.y), c[1]),
                       fma(x, vec4<f32>(y.z), c[2]), fma(x, vec4<f32>(y.w), c[3]));
}

fn k_step(kk: u32, ty: u32, tx: u32) {
    let a0 = tile_a[kk * (BM / 4u) + ty];
    let a1 = tile_a[kk * (BM / 4u) + ty + BM / 8u];
    let b0 = tile_b[kk * (BN / 4u) + tx];
    let b1 = tile_b[kk * (BN / 4u) + tx + BN / 8u];
    c00 = outer_fma(c00, a0, b0);
    if (TN == 8u) { c01 = outer_fma(c01, a0, b1); }
    if (TM == 8u) { c10 = outer_fma(c10, a1, b0); }
    if (TM == 8u && TN == 8u) { c11 = outer_fma(c11, a1, b1); }
}

// One output row of a block: four columns from col0 (bias and beta in f32, then rounded).
fn store_row(c_off: u32, row: u32, col0: u32, value: vec4<f32>) {
    if (row >= params.m) { return; }
    for (var j = 0u; j < 4u; j++) {
        let col = col0 + j;
        if (col < params.n) {
            let idx = c_off + row * params.n + col;
            var out_value = params.alpha * value[j];
            if (params.beta != 0.0) { out_value += params.beta * f32(c[idx]); }
            if (params.has_bias != 0u) { out_value += f32(bias[col]); }
            c[idx] = T(out_value);
        }
    }
}

fn store_block(c_off: u32, row0: u32, col0: u32, block: mat4x4<f32>) {
    let rows = transpose(block);
    store_row(c_off, row0, col0, rows[0]);
    store_row(c_off, row0 + 1u, col0, rows[1]);
    store_row(c_off, row0 + 2u, col0, rows[2]);
    store_row(c_off, row0 + 3u, col0, rows[3]);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m = params.m;
    let n = params.n;
    let k = params.k;
    let z = wid.z + params.z_base;
    let outer = z / params.inner;
    let inner = z % params.inner;
    let a_off = params.a_base + outer * params.a_outer + inner * params.a_inner;
    let b_off = params.b_base + outer * params.b_outer + inner * params.b_inner;
    let c_off = params.c_base + z * m * n;

    let m0 = wid.y * BM;
    let n0 = wid.x * BN;
    let tx = lid % (BN / TN);
    let ty = lid / (BN / TN);
    let a4 = BM / 4u;
    let b4 = BN / 4u;

    for (var k0 = 0u; k0 < k; k0 += BK) {
        for (var l = lid; l < BK * a4; l += WG) {
            if (TRANS_A) {  // stored k x m: contiguous along m, lands as a whole vec4
                tile_a[l] = load_a(a_off, k0 + l / a4, m0 + (l % a4) * 4u, k, m);
            } else {        // stored m x k: contiguous along k, scattered into the [k][m] tile
                let row = l / (BK / 4u);
                let kq = (l % (BK / 4u)) * 4u;
                let v = load_a(a_off, m0 + row, k0 + kq, m, k);
                let at = kq * a4 + row / 4u;
                tile_a[at][row % 4u] = v.x;
                tile_a[at + a4][row % 4u] = v.y;
                tile_a[at + 2u * a4][row % 4u] = v.z;
                tile_a[at + 3u * a4][row % 4u] = v.w;
            }
        }
        for (var l = lid; l < BK * b4; l += WG) {
            if (TRANS_B) {  // stored n x k (a linear layer's weight)
                let col = l / (BK / 4u);
                let kq = (l % (BK / 4u)) * 4u;
                let v = load_b(b_off, n0 + col, k0 + kq, n, k);
                let at = kq * b4 + col / 4u;
                tile_b[at][col % 4u] = v.x;
                tile_b[at + b4][col % 4u] = v.y;
                tile_b[at + 2u * b4][col % 4u] = v.z;
                tile_b[at + 3u * b4][col % 4u] = v.w;
            } else {        // stored k x n
                tile_b[l] = load_b(b_off, k0 + l / b4, n0 + (l % b4) * 4u, k, n);
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk += 4u) {  // BK is a multiple of 4: unrolled by hand
            k_step(kk, ty, tx);
            k_step(kk + 1u, ty, tx);
            k_step(kk + 2u, ty, tx);
            k_step(kk + 3u, ty, tx);
        }
        workgroupBarrier();
    }

    let row0 = m0 + ty * 4u;
    let col0 = n0 + tx * 4u;
    store_block(c_off, row0, col0, c00);
    if (TN == 8u) { store_block(c_off, row0, col0 + BN / 2u, c01); }
    if (TM == 8u) { store_block(c_off, row0 + BM / 2u, col0, c10); }
    if (TM == 8u && TN == 8u) { store_block(c_off, row0 + BM / 2u, col0 + BN / 2u, c11); }
}
