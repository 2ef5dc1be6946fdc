// Batched GEMM: C = alpha * op(A) @ op(B) + beta * C + bias, op = optional transpose.
//
// Each workgroup computes a BM x BN tile of C, walking K in steps of BK through workgroup
// memory; each invocation owns a TM x TN block of that tile (register blocking, TM and TN 4
// or 8). Its rows and columns are 4-wide groups strided across the tile (row group ty and
// ty + BM/8), so neighbouring invocations read neighbouring vec4s of workgroup memory: no
// bank conflicts, 128-bit reads.
//
// A and B are read as vec4 when their contiguous dimension is a multiple of 4 (VEC_A, VEC_B
// and element types AV, BV = vec4<T>); otherwise AV = T (BV = T) and four scalars are read
// with per-element bounds checks. Transposes are folded into the load stage: the tiles in
// workgroup memory are always [k][m] and [k][n]. Out-of-range elements load as 0, so ragged
// M, N, K need no special case. The next k step's global loads are issued into registers
// before the current tile's FMAs (register prefetch), hiding their latency: +10-15% on an H200.
//
// No loops over register arrays anywhere: naga bounds every loop with a counter, so drivers
// cannot unroll them, and a dynamically indexed array would live in slow local memory. The
// per-invocation state is private variables touched by straight-line code instead.
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

// Accumulator block (u, v) holds row group ty + u * BM/8 and column group tx + v * BN/8;
// element (row i, column j) of a block is c_uv[j][i]. With TM or TN = 4 the blocks on that
// side are never touched and the compiler drops them.
var<private> c00: mat4x4<f32>;
var<private> c01: mat4x4<f32>;
var<private> c10: mat4x4<f32>;
var<private> c11: mat4x4<f32>;
// Prefetched chunks of the next A and B tiles: chunk q of this invocation is vec4 number
// lid + q * WG of the tile (at most 4 per invocation for the tile shapes used).
var<private> next_a: array<vec4<f32>, 4>;
var<private> next_b: array<vec4<f32>, 4>;
var<private> lid: u32;
var<private> a_off: u32;
var<private> b_off: u32;
var<private> m0: u32;
var<private> n0: u32;

// Four consecutive elements along the contiguous dimension of a row-major rows x cols matrix.
// `vec4<T>(a[i])` is a splat in scalar mode and the identity in vec4 mode, so both branches
// type-check under either alias; the override picks one at pipeline creation.
fn load_a(r: u32, col: u32, rows: u32, cols: u32) -> vec4<f32> {
    if (r >= rows || col >= cols) { return vec4<f32>(0.0); }
    let i = a_off + r * cols + col;
    if (VEC_A) { return vec4<f32>(vec4<T>(a[i / 4u])); }
    let left = cols - col;  // >= 1
    return vec4<f32>(f32(vec4<T>(a[i]).x),
                     select(0.0, f32(vec4<T>(a[i + 1u]).x), left > 1u),
                     select(0.0, f32(vec4<T>(a[i + 2u]).x), left > 2u),
                     select(0.0, f32(vec4<T>(a[i + 3u]).x), left > 3u));
}

fn load_b(r: u32, col: u32, rows: u32, cols: u32) -> vec4<f32> {
    if (r >= rows || col >= cols) { return vec4<f32>(0.0); }
    let i = b_off + r * cols + col;
    if (VEC_B) { return vec4<f32>(vec4<T>(b[i / 4u])); }
    let left = cols - col;
    return vec4<f32>(f32(vec4<T>(b[i]).x),
                     select(0.0, f32(vec4<T>(b[i + 1u]).x), left > 1u),
                     select(0.0, f32(vec4<T>(b[i + 2u]).x), left > 2u),
                     select(0.0, f32(vec4<T>(b[i + 3u]).x), left > 3u));
}

// Chunk l of the A tile at k step k0. Stored m x k it is contiguous along k and is scattered
// into the [k][m] tile on store; stored k x m (TRANS_A) it lands as a whole vec4.
fn fetch_a(l: u32, k0: u32) -> vec4<f32> {
    if (TRANS_A) {
        return load_a(k0 + l / (BM / 4u), m0 + (l % (BM / 4u)) * 4u, params.k, params.m);
    }
    return load_a(m0 + l / (BK / 4u), k0 + (l % (BK / 4u)) * 4u, params.m, params.k);
}

fn store_a(l: u32, v: vec4<f32>) {
    if (TRANS_A) { tile_a[l] = v; return; }
    let row = l / (BK / 4u);
    let at = (l % (BK / 4u)) * BM + row / 4u;  // [4 * (l % (BK/4))][row / 4]
    tile_a[at][row % 4u] = v.x;
    tile_a[at + BM / 4u][row % 4u] = v.y;
    tile_a[at + BM / 2u][row % 4u] = v.z;
    tile_a[at + 3u * BM / 4u][row % 4u] = v.w;
}

// Chunk l of the B tile: stored k x n it lands whole; stored n x k (TRANS_B, a linear
// layer's weight) it is scattered.
fn fetch_b(l: u32, k0: u32) -> vec4<f32> {
    if (TRANS_B) {
        return load_b(n0 + l / (BK / 4u), k0 + (l % (BK / 4u)) * 4u, params.n, params.k);
    }
    return load_b(k0 + l / (BN / 4u), n0 + (l % (BN / 4u)) * 4u, params.k, params.n);
}

fn store_b(l: u32, v: vec4<f32>) {
    if (!TRANS_B) { tile_b[l] = v; return; }
    let col = l / (BK / 4u);
    let at = (l % (BK / 4u)) * BN + col / 4u;
    tile_b[at][col % 4u] = v.x;
    tile_b[at + BN / 4u][col % 4u] = v.y;
    tile_b[at + BN / 2u][col % 4u] = v.z;
    tile_b[at + 3u * BN / 4u][col % 4u] = v.w;
}

fn fetch_tiles(k0: u32) {
    let na = BK * BM / 4u;
    let nb = BK * BN / 4u;
    if (lid < na) { next_a[0] = fetch_a(lid, k0); }
    if (lid + WG < na) { next_a[1] = fetch_a(lid + WG, k0); }
    if (lid + 2u * WG < na) { next_a[2] = fetch_a(lid + 2u * WG, k0); }
    if (lid + 3u * WG < na) { next_a[3] = fetch_a(lid + 3u * WG, k0); }
    if (lid < nb) { next_b[0] = fetch_b(lid, k0); }
    if (lid + WG < nb) { next_b[1] = fetch_b(lid + WG, k0); }
    if (lid + 2u * WG < nb) { next_b[2] = fetch_b(lid + 2u * WG, k0); }
    if (lid + 3u * WG < nb) { next_b[3] = fetch_b(lid + 3u * WG, k0); }
}

fn store_tiles() {
    let na = BK * BM / 4u;
    let nb = BK * BN / 4u;
    if (lid < na) { store_a(lid, next_a[0]); }
    if (lid + WG < na) { store_a(lid + WG, next_a[1]); }
    if (lid + 2u * WG < na) { store_a(lid + 2u * WG, next_a[2]); }
    if (lid + 3u * WG < na) { store_a(lid + 3u * WG, next_a[3]); }
    if (lid < nb) { store_b(lid, next_b[0]); }
    if (lid + WG < nb) { store_b(lid + WG, next_b[1]); }
    if (lid + 2u * WG < nb) { store_b(lid + 2u * WG, next_b[2]); }
    if (lid + 3u * WG < nb) { store_b(lid + 3u * WG, next_b[3]); }
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

// One output row of a block: four columns from col0 (beta and bias in f32, then rounded).
// Runs once per output, so its small loop does not matter.
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
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) local_index: u32) {
    let z = wid.z + params.z_base;
    let outer = z / params.inner;
    let inner = z % params.inner;
    lid = local_index;
    a_off = params.a_base + outer * params.a_outer + inner * params.a_inner;
    b_off = params.b_base + outer * params.b_outer + inner * params.b_inner;
    m0 = wid.y * BM;
    n0 = wid.x * BN;
    let tx = lid % (BN / TN);
    let ty = lid / (BN / TN);

    fetch_tiles(0u);
    for (var k0 = 0u; k0 < params.k; k0 += BK) {
        store_tiles();
        workgroupBarrier();
        if (k0 + BK < params.k) { fetch_tiles(k0 + BK); }
        for (var kk = 0u; kk < BK; kk += 4u) {  // BK is a multiple of 4: unrolled by hand
            k_step(kk, ty, tx);
            k_step(kk + 1u, ty, tx);
            k_step(kk + 2u, ty, tx);
            k_step(kk + 3u, ty, tx);
        }
        workgroupBarrier();
    }

    let c_off = params.c_base + z * params.m * params.n;
    let row0 = m0 + ty * 4u;
    let col0 = n0 + tx * 4u;
    store_block(c_off, row0, col0, c00);
    if (TN == 8u) { store_block(c_off, row0, col0 + BN / 2u, c01); }
    if (TM == 8u) { store_block(c_off, row0 + BM / 2u, col0, c10); }
    if (TM == 8u && TN == 8u) { store_block(c_off, row0 + BM / 2u, col0 + BN / 2u, c11); }
}
