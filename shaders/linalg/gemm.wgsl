//! parts: linalg/register_tile + linalg/gemm_b | linalg/register_tile + quant/gemm_b_q8_0 | linalg/register_tile + quant/gemm_b_q4_k | linalg/register_tile + quant/gemm_b_q5_0
// Batched GEMM: C = alpha * op(A) @ op(B) + beta * C + bias, op = optional transpose.
//
// A workgroup of WX x WY invocations computes a BM x BN tile of C (BM = TM * WY, BN = TN * WX;
// TM and TN 4 or 8 outputs per invocation), walking K in steps of BK (8 or 16) through
// double-buffered workgroup tiles: the next step's global loads go to registers while the
// current tile is multiplied, then land in the other buffer, so one barrier per step does.
// An invocation's rows are the 4-groups ty and ty + WY, its columns the 4-groups tx and
// tx + WX: neighbouring invocations read neighbouring vec4s of the tiles (128-bit reads, no
// bank conflicts).
//
// The tiles are always [k][m / 4] and [k][n / 4] vec4s; transposes are folded into the load
// stage. An operand contiguous along m (n) lands as whole vec4s. One contiguous along K (A
// as stored, a linear layer's weight B) is read as L = TM * BK / WX (TN * BK / WY) consecutive
// k of ONE row per invocation, rows following the invocation index, and scattered as scalars:
// a warp's 32 stores then hit 32 consecutive rows, i.e. 32 banks (rows split across
// invocations by k put 2-4 stores on one bank).
// A and B are read as vec4 when their contiguous dimension is a multiple of 4 (VEC_A, VEC_B
// and element types AV, BV = vec4<T>); otherwise AV = T (BV = T) and four scalars are read
// with per-element bounds checks. Out-of-range elements load as 0, so ragged M, N, K need no
// special case.
//
// No loops over register state: naga bounds every loop with a counter, so drivers cannot
// unroll them, and a dynamically indexed private array would live in slow local memory.
// Accumulators are 16 named vec4s (shaders/linalg/register_tile.wgsl, shared with
// shaders/nn/conv2d.wgsl) and the K step is unrolled by hand. On an H200 this kernel's best tiles run big products about as fast
// as the single-buffered one it replaced (4096^3: 4.87 against 5.13 ms); the gains are in
// the tile choice and split-K for grids that do not fill the GPU (gpustd/gemm/plan.py).
//
// GEGLU (1: erf GELU, 2: tanh) fuses diffusers' GEGLU into a linear layer's GEMM (TRANS_B,
// TN = 8, no split): B holds 2n weight rows, value rows [0, n) and gate rows [n, 2n); a tile's
// first BN / 2 columns load value rows and its last BN / 2 the matching gate rows, so each
// invocation's column groups tx and tx + WX hold value and gate of the same 4 outputs, and
// C (m x n) = (value + bias[j]) * gelu(gate + bias[n + j]).
//
// Split-K (SPLIT): batch z splits into (z / splits, z % splits); each split walks a
// contiguous range of K tiles and writes raw f32 sums to its own slab of c (O = f32,
// slab s at s * c_total); gemm_splitk.wgsl adds the slabs and applies alpha, beta and bias.
alias T = f32;
alias O = f32;  // element type of c: T, or f32 for split-K partial sums
alias AV = vec4<T>;
alias BV = vec4<T>;

override WX: u32 = 16u;  // invocations along n
override WY: u32 = 16u;  // invocations along m
override TM: u32 = 8u;  // rows per invocation: 4 or 8
override TN: u32 = 8u;  // columns per invocation: 4 or 8
override BK: u32 = 8u;  // 8 or 16; TM * BK / WX and TN * BK / WY must be 4, 8 or 16
override TRANS_A: bool = false;
override TRANS_B: bool = false;
override VEC_A: bool = true;
override VEC_B: bool = true;
override SPLIT: bool = false;
// Main loop: two K tiles per trip, so that after inlining every buffer offset is a constant
// (H200: 2-10% faster on long K with big outputs, 3-8% slower elsewhere; plan.py picks).
override PAIRED: bool = false;
override GEGLU: u32 = 0u;
// TRANS_A and TRANS_B read from the params: one kernel for every layout (CPU adapters:
// portable.py).
override LAYOUT_IN_PARAMS: bool = false;

// Batch z (wid.z + z_base, divided by splits) splits into (outer, inner) = (z / inner,
// z % inner); operand offsets are base + outer * X_outer + inner * X_inner, so broadcast batch
// dims cost nothing.
struct Params {
    m: u32, n: u32, k: u32,
    a_base: u32, a_outer: u32, a_inner: u32,
    b_base: u32, b_outer: u32, b_inner: u32,
    c_base: u32, inner: u32, z_base: u32,
    alpha: f32, beta: f32, has_bias: u32,
    splits: u32, k_tiles_per_split: u32, c_total: u32,
    trans_a: u32, trans_b: u32,  // TRANS_A and TRANS_B where LAYOUT_IN_PARAMS
}

@group(0) @binding(0) var<storage, read> a: array<AV>;
// binding 1, b, and load_b: shaders/linalg/gemm_b.wgsl (floats) or quant/gemm_b_*.wgsl
@group(0) @binding(2) var<storage, read> bias: array<T>;
@group(0) @binding(3) var<storage, read_write> c: array<O>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> tile_a: array<vec4<f32>, BK * TM * WY / 2u>;  // 2 x [BK][BM / 4]
var<workgroup> tile_b: array<vec4<f32>, BK * TN * WX / 2u>;  // 2 x [BK][BN / 4]

// The accumulators c{i}{h} (register_tile.wgsl): row i of the invocation's (0-3: group ty,
// 4-7: group ty + WY), columns of group tx (h = 0) or tx + WX (h = 1).
var<private> lid: u32;
var<private> tx: u32;
var<private> ty: u32;
var<private> a_off: u32;
var<private> b_off: u32;
var<private> m0: u32;
var<private> n0: u32;
// This invocation's share of the next K tiles (chunks 0-3 of A and of B).
var<private> ra0: vec4<f32>; var<private> ra1: vec4<f32>;
var<private> ra2: vec4<f32>; var<private> ra3: vec4<f32>;
var<private> rb0: vec4<f32>; var<private> rb1: vec4<f32>;
var<private> rb2: vec4<f32>; var<private> rb3: vec4<f32>;

fn trans_a() -> bool { if (LAYOUT_IN_PARAMS) { return params.trans_a != 0u; } return TRANS_A; }
fn trans_b() -> bool { if (LAYOUT_IN_PARAMS) { return params.trans_b != 0u; } return TRANS_B; }

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

// Chunk q (0-3) of this invocation's share of A's K tile t.
fn fetch_a(t: u32, q: u32) -> vec4<f32> {
    let bm = TM * WY;
    if (trans_a()) {  // stored k x m: whole vec4s along m
        let l = lid + q * WX * WY;
        return load_a(t * BK + l / (bm / 4u), m0 + (l % (bm / 4u)) * 4u, params.k, params.m);
    }
    let k = t * BK + (lid / bm) * (TM * BK / WX) + q * 4u;
    return load_a(m0 + lid % bm, k, params.m, params.k);
}

fn fetch_b(t: u32, q: u32) -> vec4<f32> {
    let bn = TN * WX;
    if (!trans_b()) {  // stored k x n: whole vec4s along n
        let l = lid + q * WX * WY;
        return load_b(t * BK + l / (bn / 4u), n0 + (l % (bn / 4u)) * 4u, params.k, params.n);
    }
    let k = t * BK + (lid / bn) * (TN * BK / WY) + q * 4u;
    if (GEGLU != 0u) {  // tile column j: value row n0 + j, or gate row n + n0 + j - BN / 2
        let j = lid % bn;
        let col = n0 + j % (bn / 2u);
        if (col >= params.n) { return vec4<f32>(0.0); }
        return load_b(col + select(0u, params.n, j >= bn / 2u), k, 2u * params.n, params.k);
    }
    return load_b(n0 + lid % bn, k, params.n, params.k);
}

// Chunk q into the A buffer starting at vec4 `at`.
fn put_a(at: u32, q: u32, v: vec4<f32>) {
    let bm = TM * WY;
    if (trans_a()) {
        tile_a[at + lid + q * WX * WY] = v;
        return;
    }
    let row = lid % bm;
    let k = (lid / bm) * (TM * BK / WX) + q * 4u;
    let i = at + k * (bm / 4u) + row / 4u;
    tile_a[i][row % 4u] = v.x;
    tile_a[i + bm / 4u][row % 4u] = v.y;
    tile_a[i + bm / 2u][row % 4u] = v.z;
    tile_a[i + 3u * bm / 4u][row % 4u] = v.w;
}

fn put_b(at: u32, q: u32, v: vec4<f32>) {
    let bn = TN * WX;
    if (!trans_b()) {
        tile_b[at + lid + q * WX * WY] = v;
        return;
    }
    let col = lid % bn;
    let k = (lid / bn) * (TN * BK / WY) + q * 4u;
    let i = at + k * (bn / 4u) + col / 4u;
    tile_b[i][col % 4u] = v.x;
    tile_b[i + bn / 4u][col % 4u] = v.y;
    tile_b[i + bn / 2u][col % 4u] = v.z;
    tile_b[i + 3u * bn / 4u][col % 4u] = v.w;
}

// k step kk of the buffers at vec4 offsets a_at / b_at: c += outer(a column, b row).
fn k_step(a_at: u32, b_at: u32, kk: u32) {
    let ai = a_at + kk * (TM * WY / 4u) + ty;
    let bi = b_at + kk * (TN * WX / 4u) + tx;
    let a0 = tile_a[ai];
    let b0 = tile_b[bi];
    var a1 = vec4<f32>(0.0);
    var b1 = vec4<f32>(0.0);
    if (TM == 8u) { a1 = tile_a[ai + WY]; }
    if (TN == 8u) { b1 = tile_b[bi + WX]; }
    outer(a0, a1, b0, b1);
}

// One element of C: raw sum (split-K slab) or alpha * sum + beta * C + bias, in f32.
// has_bias 1: a bias per column (linear layers); 2: per row (a 1x1 conv's channels).
fn finish(idx: u32, row: u32, col: u32, value: f32) -> O {
    if (SPLIT) { return O(value); }
    var out_value = params.alpha * value;
    if (params.beta != 0.0) { out_value += params.beta * f32(c[idx]); }
    if (params.has_bias == 1u) { out_value += f32(bias[col]); }
    if (params.has_bias == 2u) { out_value += f32(bias[row]); }
    return O(out_value);
}

// Four columns from col0 of one row.
fn store4(c_off: u32, row: u32, col0: u32, v: vec4<f32>) {
    if (row >= params.m || col0 >= params.n) { return; }
    let idx = c_off + row * params.n + col0;
    if (col0 + 3u < params.n) {
        c[idx] = finish(idx, row, col0, v.x);
        c[idx + 1u] = finish(idx + 1u, row, col0 + 1u, v.y);
        c[idx + 2u] = finish(idx + 2u, row, col0 + 2u, v.z);
        c[idx + 3u] = finish(idx + 3u, row, col0 + 3u, v.w);
        return;
    }
    for (var j = 0u; j < params.n - col0; j++) {  // ragged right edge: at most 3
        c[idx + j] = finish(idx + j, row, col0 + j, v[j]);
    }
}

// erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), as shaders/nn/activation.wgsl.
fn gelu(v: f32) -> f32 {
    if (GEGLU == 2u) {
        let inner = clamp(0.7978845608028654 * (v + 0.044715 * v * v * v), -15.0, 15.0);
        return 0.5 * v * (1.0 + tanh(inner));
    }
    let a = abs(v) * 0.7071067811865476;
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741
        + t * (-1.453152027 + t * 1.061405429))));
    return 0.5 * v * (1.0 + sign(v) * (1.0 - poly * exp(-a * a)));
}

// GEGLU's epilogue: value columns in v, the matching gate columns in g.
fn store_geglu(c_off: u32, row: u32, col0: u32, v: vec4<f32>, g: vec4<f32>) {
    if (row >= params.m || col0 >= params.n) { return; }
    let idx = c_off + row * params.n + col0;
    for (var j = 0u; j < min(4u, params.n - col0); j++) {
        var value = params.alpha * v[j];
        var gate = params.alpha * g[j];
        if (params.has_bias == 1u) {
            value += f32(bias[col0 + j]);
            gate += f32(bias[params.n + col0 + j]);
        }
        c[idx + j] = O(value * gelu(gate));
    }
}

fn store_row(c_off: u32, row: u32, v0: vec4<f32>, v1: vec4<f32>) {
    let col0 = n0 + tx * 4u;
    if (GEGLU != 0u) {
        store_geglu(c_off, row, col0, v0, v1);
        return;
    }
    store4(c_off, row, col0, v0);
    if (TN == 8u) { store4(c_off, row, col0 + 4u * WX, v1); }
}

// Pipeline step t: fetch K tile t (t < t_end) into registers while multiplying tile t - 1,
// which the previous step stored in the other buffer, then store tile t into buffer `buf`
// (= (t - t_begin) % 2); alternating buffers make one barrier per step enough.
fn tile_step(t: u32, t_begin: u32, t_end: u32, buf: u32) {
    let la = TM * BK / WX;  // elements per invocation and K tile: 4, 8 or 16
    let lb = TN * BK / WY;
    let a_size = BK * TM * WY / 4u;  // vec4s in one buffer
    let b_size = BK * TN * WX / 4u;
    if (t < t_end) {
        ra0 = fetch_a(t, 0u);
        if (la > 4u) { ra1 = fetch_a(t, 1u); }
        if (la > 8u) { ra2 = fetch_a(t, 2u); ra3 = fetch_a(t, 3u); }
        rb0 = fetch_b(t, 0u);
        if (lb > 4u) { rb1 = fetch_b(t, 1u); }
        if (lb > 8u) { rb2 = fetch_b(t, 2u); rb3 = fetch_b(t, 3u); }
    }
    if (t > t_begin) {
        let a_at = (1u - buf) * a_size;
        let b_at = (1u - buf) * b_size;
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
        let a_at = buf * a_size;
        let b_at = buf * b_size;
        put_a(a_at, 0u, ra0);
        if (la > 4u) { put_a(a_at, 1u, ra1); }
        if (la > 8u) { put_a(a_at, 2u, ra2); put_a(a_at, 3u, ra3); }
        put_b(b_at, 0u, rb0);
        if (lb > 4u) { put_b(b_at, 1u, rb1); }
        if (lb > 8u) { put_b(b_at, 2u, rb2); put_b(b_at, 3u, rb3); }
    }
    workgroupBarrier();
}

@compute @workgroup_size(WX * WY)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) local_index: u32) {
    let zs = wid.z + params.z_base;
    let z = zs / params.splits;
    let split = zs % params.splits;
    let outer = z / params.inner;
    let inner = z % params.inner;
    lid = local_index;
    tx = lid % WX;
    ty = lid / WX;
    a_off = params.a_base + outer * params.a_outer + inner * params.a_inner;
    b_off = params.b_base + outer * params.b_outer + inner * params.b_inner;
    m0 = wid.y * (TM * WY);
    n0 = wid.x * select(TN * WX, TN * WX / 2u, GEGLU != 0u);
    let k_tiles = (params.k + BK - 1u) / BK;
    let t_begin = split * params.k_tiles_per_split;
    let t_end = min(t_begin + params.k_tiles_per_split, k_tiles);
    if (PAIRED) {
        for (var t = t_begin; t <= t_end; t += 2u) {
            tile_step(t, t_begin, t_end, 0u);
            if (t + 1u <= t_end) { tile_step(t + 1u, t_begin, t_end, 1u); }
        }
    } else {
        for (var t = t_begin; t <= t_end; t++) {
            tile_step(t, t_begin, t_end, (t - t_begin) & 1u);
        }
    }

    var c_off = params.c_base + z * params.m * params.n;
    if (SPLIT) { c_off += split * params.c_total; }
    let r0 = m0 + ty * 4u;
    store_row(c_off, r0, c00, c01);
    store_row(c_off, r0 + 1u, c10, c11);
    store_row(c_off, r0 + 2u, c20, c21);
    store_row(c_off, r0 + 3u, c30, c31);
    if (TM == 8u) {
        let r1 = r0 + 4u * WY;
        store_row(c_off, r1, c40, c41);
        store_row(c_off, r1 + 1u, c50, c51);
        store_row(c_off, r1 + 2u, c60, c61);
        store_row(c_off, r1 + 3u, c70, c71);
    }
}
