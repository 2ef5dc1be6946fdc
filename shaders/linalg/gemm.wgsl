// Batched GEMM: C = alpha * op(A) @ op(B) + beta * C + bias, op = optional transpose.
//
// Each workgroup computes a BM x BN tile of C, walking K in steps of BK through workgroup
// memory; each invocation owns a TM x TN block of that tile (register blocking). Its rows and
// columns are 4-wide groups strided across the tile (group r4 = ty + u * BM/TM), so neighbouring
// invocations read neighbouring vec4s of workgroup memory: no bank conflicts, 128-bit reads.
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

// Four consecutive elements along the contiguous dimension of a row-major rows x cols matrix.
// `vec4<T>(a[i])` is a splat in scalar mode and the identity in vec4 mode, so both branches
// type-check under either alias; the override picks one at pipeline creation.
fn load_a(base: u32, r: u32, col: u32, rows: u32, cols: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (r < rows) {
        let i = base + r * cols + col;
        if (VEC_A) {
            if (col < cols) { v = vec4<f32>(vec4<T>(a[i / 4u])); }
        } else {
            for (var j = 0u; j < 4u; j++) {
                if (col + j < cols) { v[j] = f32(vec4<T>(a[i + j]).x); }
            }
        }
    }
    return v;
}

fn load_b(base: u32, r: u32, col: u32, rows: u32, cols: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (r < rows) {
        let i = base + r * cols + col;
        if (VEC_B) {
            if (col < cols) { v = vec4<f32>(vec4<T>(b[i / 4u])); }
        } else {
            for (var j = 0u; j < 4u; j++) {
                if (col + j < cols) { v[j] = f32(vec4<T>(b[i + j]).x); }
            }
        }
    }
    return v;
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

    var acc: array<vec4<f32>, 16>;  // [TM rows][TN / 4 vec4s], TM * TN <= 64
    for (var k0 = 0u; k0 < k; k0 += BK) {
        for (var l = lid; l < BK * a4; l += WG) {
            if (TRANS_A) {  // stored k x m: contiguous along m, lands as a whole vec4
                let kk = l / a4;
                let i4 = l % a4;
                tile_a[kk * a4 + i4] = load_a(a_off, k0 + kk, m0 + i4 * 4u, k, m);
            } else {        // stored m x k: contiguous along k, scattered into the [k][m] tile
                let row = l / (BK / 4u);
                let kq = (l % (BK / 4u)) * 4u;
                let v = load_a(a_off, m0 + row, k0 + kq, m, k);
                for (var j = 0u; j < 4u; j++) { tile_a[(kq + j) * a4 + row / 4u][row % 4u] = v[j]; }
            }
        }
        for (var l = lid; l < BK * b4; l += WG) {
            if (TRANS_B) {  // stored n x k (a linear layer's weight)
                let col = l / (BK / 4u);
                let kq = (l % (BK / 4u)) * 4u;
                let v = load_b(b_off, n0 + col, k0 + kq, n, k);
                for (var j = 0u; j < 4u; j++) { tile_b[(kq + j) * b4 + col / 4u][col % 4u] = v[j]; }
            } else {        // stored k x n
                let kk = l / b4;
                let j4 = l % b4;
                tile_b[kk * b4 + j4] = load_b(b_off, k0 + kk, n0 + j4 * 4u, k, n);
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var fa: array<vec4<f32>, 2>;
            var fb: array<vec4<f32>, 2>;
            for (var u = 0u; u < TM / 4u; u++) { fa[u] = tile_a[kk * a4 + ty + u * (BM / TM)]; }
            for (var v = 0u; v < TN / 4u; v++) { fb[v] = tile_b[kk * b4 + tx + v * (BN / TN)]; }
            for (var u = 0u; u < TM / 4u; u++) {
                for (var i = 0u; i < 4u; i++) {
                    for (var v = 0u; v < TN / 4u; v++) {
                        let r = (u * 4u + i) * (TN / 4u) + v;
                        acc[r] = fma(vec4<f32>(fa[u][i]), fb[v], acc[r]);
                    }
                }
            }
        }
        workgroupBarrier();
    }

    for (var u = 0u; u < TM / 4u; u++) {
        for (var i = 0u; i < 4u; i++) {
            let row = m0 + (ty + u * (BM / TM)) * 4u + i;
            if (row >= m) { continue; }
            for (var v = 0u; v < TN / 4u; v++) {
                let col0 = n0 + (tx + v * (BN / TN)) * 4u;
                let r = (u * 4u + i) * (TN / 4u) + v;
                for (var j = 0u; j < 4u; j++) {
                    let col = col0 + j;
                    if (col < n) {
                        let idx = c_off + row * n + col;
                        var value = params.alpha * acc[r][j];
                        if (params.beta != 0.0) { value += params.beta * f32(c[idx]); }
                        if (params.has_bias != 0u) { value += f32(bias[col]); }
                        c[idx] = T(value);
                    }
                }
            }
        }
    }
}
