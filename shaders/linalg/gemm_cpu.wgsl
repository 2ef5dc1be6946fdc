// GEMM for CPU adapters: C = alpha * op(A) @ op(B) + beta * C + bias, without workgroup memory
// or barriers (gemm.wgsl's tiles are a GPU's). llvmpipe runs eight invocations as the lanes
// of one vector, so each load is a gather of eight (a vec4 one costs little more than a
// scalar one) and a product a tenth of a load (bench/NOTES.md, "A direct GEMM and conv for
// CPU adapters"). Each invocation owns 8 rows x 8 columns of C and walks K four at a time:
// it reads op(A)'s 8 rows and op(B)'s 8 columns as vec4s along K where K is the operand's
// contiguous dimension, else 4 rows of 8 along m (n), two vec4s each, taken apart (the lanes
// of a vec4 are separate registers there: free); then 256 fmas.
// Grid: (ceil(m / 64), ceil(n / 8), batch entries): a workgroup's 8 invocations take 8
// neighbouring row blocks of one column block. Batch z splits into (z / inner, z % inner)
// with element offsets base + outer * X_outer + inner * X_inner, as in gemm.wgsl.
alias T = f32;
alias AV = vec4<T>;  // T where the operand's contiguous dimension is not a multiple of 4
alias BV = vec4<T>;
override TRANS_A: bool = false;  // A stored k x m
override TRANS_B: bool = false;  // B stored n x k (a linear layer's weight)
override VEC_A: bool = true;
override VEC_B: bool = true;

struct Params {
    m: u32, n: u32, k: u32,
    a_base: u32, a_outer: u32, a_inner: u32,
    b_base: u32, b_outer: u32, b_inner: u32,
    c_base: u32, inner: u32, z_base: u32,
    alpha: f32, beta: f32, has_bias: u32,  // has_bias 1: one per column, 2: one per row
}

@group(0) @binding(0) var<storage, read> a: array<AV>;
@group(0) @binding(1) var<storage, read> b: array<BV>;
@group(0) @binding(2) var<storage, read> bias: array<T>;
@group(0) @binding(3) var<storage, read_write> c: array<T>;
@group(0) @binding(4) var<uniform> params: Params;

var<private> a_off: u32;
var<private> b_off: u32;

// Elements k0..k0+3 of the row of A that starts at element `row` (A stored m x k, the
// row's index clamped into the matrix by the caller): zero past K.
fn a_k(row: u32, k0: u32) -> vec4<f32> {
    if (VEC_A) {  // k % 4 == 0
        return vec4<f32>(vec4<T>(a[(row + k0) / 4u]));
    }
    let last = row + params.k - 1u;
    return vec4<f32>(f32(vec4<T>(a[row + k0]).x),
                     select(0.0, f32(vec4<T>(a[min(row + k0 + 1u, last)]).x), k0 + 1u < params.k),
                     select(0.0, f32(vec4<T>(a[min(row + k0 + 2u, last)]).x), k0 + 2u < params.k),
                     select(0.0, f32(vec4<T>(a[min(row + k0 + 3u, last)]).x), k0 + 3u < params.k));
}

// Elements col..col+3 of row r of A stored k x m: zero past K; columns past m clamped into
// the row (their sums are never stored).
fn a_m(r: u32, col: u32) -> vec4<f32> {
    let row = a_off + min(r, params.k - 1u) * params.m;
    var v: vec4<f32>;
    if (VEC_A) {  // m % 4 == 0
        v = vec4<f32>(vec4<T>(a[(row + min(col, params.m - 4u)) / 4u]));
    } else {
        let last = row + params.m - 1u;
        v = vec4<f32>(f32(vec4<T>(a[min(row + col, last)]).x),
                      f32(vec4<T>(a[min(row + col + 1u, last)]).x),
                      f32(vec4<T>(a[min(row + col + 2u, last)]).x),
                      f32(vec4<T>(a[min(row + col + 3u, last)]).x));
    }
    return select(vec4<f32>(0.0), v, r < params.k);
}

// The same two of B: b_k for B stored n x k (TRANS_B), b_n for B stored k x n.
fn b_k(row: u32, k0: u32) -> vec4<f32> {
    if (VEC_B) {
        return vec4<f32>(vec4<T>(b[(row + k0) / 4u]));
    }
    let last = row + params.k - 1u;
    return vec4<f32>(f32(vec4<T>(b[row + k0]).x),
                     select(0.0, f32(vec4<T>(b[min(row + k0 + 1u, last)]).x), k0 + 1u < params.k),
                     select(0.0, f32(vec4<T>(b[min(row + k0 + 2u, last)]).x), k0 + 2u < params.k),
                     select(0.0, f32(vec4<T>(b[min(row + k0 + 3u, last)]).x), k0 + 3u < params.k));
}

fn b_n(r: u32, col: u32) -> vec4<f32> {
    let row = b_off + min(r, params.k - 1u) * params.n;
    var v: vec4<f32>;
    if (VEC_B) {
        v = vec4<f32>(vec4<T>(b[(row + min(col, params.n - 4u)) / 4u]));
    } else {
        let last = row + params.n - 1u;
        v = vec4<f32>(f32(vec4<T>(b[min(row + col, last)]).x),
                      f32(vec4<T>(b[min(row + col + 1u, last)]).x),
                      f32(vec4<T>(b[min(row + col + 2u, last)]).x),
                      f32(vec4<T>(b[min(row + col + 3u, last)]).x));
    }
    return select(vec4<f32>(0.0), v, r < params.k);
}

// Where row r of a matrix stored rows x len at `at` starts, r clamped into it (a row past
// the end reads the last one; its sums are never stored).
fn row_at(at: u32, r: u32, rows: u32, len: u32) -> u32 {
    return at + min(r, rows - 1u) * len;
}

// acc + one row of op(A) times 4 columns of op(B), all vec4s along K: an fma a k in order,
// as gemm.wgsl sums (the same bits as its unsplit kernel; dot() would leave the rounding to
// the driver, and Mesa's Vulkan and OpenGL paths round it differently).
fn dots(acc: vec4<f32>, x: vec4<f32>, y0: vec4<f32>, y1: vec4<f32>, y2: vec4<f32>,
        y3: vec4<f32>) -> vec4<f32> {
    var r = fma(vec4<f32>(x.x), vec4<f32>(y0.x, y1.x, y2.x, y3.x), acc);
    r = fma(vec4<f32>(x.y), vec4<f32>(y0.y, y1.y, y2.y, y3.y), r);
    r = fma(vec4<f32>(x.z), vec4<f32>(y0.z, y1.z, y2.z, y3.z), r);
    return fma(vec4<f32>(x.w), vec4<f32>(y0.w, y1.w, y2.w, y3.w), r);
}

// Row `row` of C, columns n0..n0+7 from the sums lo (0-3) and hi (4-7); cb_lo, cb_hi: the
// columns' biases (has_bias 1).
fn store_row(c_off: u32, row: u32, n0: u32, lo: vec4<f32>, hi: vec4<f32>, cb_lo: vec4<f32>,
             cb_hi: vec4<f32>) {
    if (row >= params.m) {
        return;
    }
    var rb = 0.0;
    if (params.has_bias == 2u) { rb = f32(bias[row]); }
    let at = c_off + row * params.n + n0;
    for (var j = 0u; j < min(8u, params.n - n0); j++) {
        var v = params.alpha * select(hi, lo, j < 4u)[j % 4u];
        if (params.beta != 0.0) { v += params.beta * f32(c[at + j]); }  // else C unread
        c[at + j] = T(v + select(cb_hi, cb_lo, j < 4u)[j % 4u] + rb);
    }
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m0 = (wid.x * 8u + lid) * 8u;
    if (m0 >= params.m) {
        return;
    }
    let n0 = wid.y * 8u;
    let z = wid.z + params.z_base;
    let outer = z / params.inner;
    let inner = z % params.inner;
    a_off = params.a_base + outer * params.a_outer + inner * params.a_inner;
    b_off = params.b_base + outer * params.b_outer + inner * params.b_inner;
    let ra0 = row_at(a_off, m0, params.m, params.k);
    let ra1 = row_at(a_off, m0 + 1u, params.m, params.k);
    let ra2 = row_at(a_off, m0 + 2u, params.m, params.k);
    let ra3 = row_at(a_off, m0 + 3u, params.m, params.k);
    let ra4 = row_at(a_off, m0 + 4u, params.m, params.k);
    let ra5 = row_at(a_off, m0 + 5u, params.m, params.k);
    let ra6 = row_at(a_off, m0 + 6u, params.m, params.k);
    let ra7 = row_at(a_off, m0 + 7u, params.m, params.k);
    let rb0 = row_at(b_off, n0, params.n, params.k);
    let rb1 = row_at(b_off, n0 + 1u, params.n, params.k);
    let rb2 = row_at(b_off, n0 + 2u, params.n, params.k);
    let rb3 = row_at(b_off, n0 + 3u, params.n, params.k);
    let rb4 = row_at(b_off, n0 + 4u, params.n, params.k);
    let rb5 = row_at(b_off, n0 + 5u, params.n, params.k);
    let rb6 = row_at(b_off, n0 + 6u, params.n, params.k);
    let rb7 = row_at(b_off, n0 + 7u, params.n, params.k);
    var c00 = vec4<f32>(0.0); var c01 = vec4<f32>(0.0);
    var c10 = vec4<f32>(0.0); var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0); var c21 = vec4<f32>(0.0);
    var c30 = vec4<f32>(0.0); var c31 = vec4<f32>(0.0);
    var c40 = vec4<f32>(0.0); var c41 = vec4<f32>(0.0);
    var c50 = vec4<f32>(0.0); var c51 = vec4<f32>(0.0);
    var c60 = vec4<f32>(0.0); var c61 = vec4<f32>(0.0);
    var c70 = vec4<f32>(0.0); var c71 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < params.k; k0 += 4u) {
        // op(A)'s rows x0..x7 and op(B)'s columns y0..y7, each a vec4 along K
        var x0: vec4<f32>; var x1: vec4<f32>; var x2: vec4<f32>; var x3: vec4<f32>;
        var x4: vec4<f32>; var x5: vec4<f32>; var x6: vec4<f32>; var x7: vec4<f32>;
        if (TRANS_A) {
            let p0 = a_m(k0, m0); let q0 = a_m(k0, m0 + 4u);
            let p1 = a_m(k0 + 1u, m0); let q1 = a_m(k0 + 1u, m0 + 4u);
            let p2 = a_m(k0 + 2u, m0); let q2 = a_m(k0 + 2u, m0 + 4u);
            let p3 = a_m(k0 + 3u, m0); let q3 = a_m(k0 + 3u, m0 + 4u);
            x0 = vec4<f32>(p0.x, p1.x, p2.x, p3.x); x1 = vec4<f32>(p0.y, p1.y, p2.y, p3.y);
            x2 = vec4<f32>(p0.z, p1.z, p2.z, p3.z); x3 = vec4<f32>(p0.w, p1.w, p2.w, p3.w);
            x4 = vec4<f32>(q0.x, q1.x, q2.x, q3.x); x5 = vec4<f32>(q0.y, q1.y, q2.y, q3.y);
            x6 = vec4<f32>(q0.z, q1.z, q2.z, q3.z); x7 = vec4<f32>(q0.w, q1.w, q2.w, q3.w);
        } else {
            x0 = a_k(ra0, k0); x1 = a_k(ra1, k0); x2 = a_k(ra2, k0); x3 = a_k(ra3, k0);
            x4 = a_k(ra4, k0); x5 = a_k(ra5, k0); x6 = a_k(ra6, k0); x7 = a_k(ra7, k0);
        }
        var y0: vec4<f32>; var y1: vec4<f32>; var y2: vec4<f32>; var y3: vec4<f32>;
        var y4: vec4<f32>; var y5: vec4<f32>; var y6: vec4<f32>; var y7: vec4<f32>;
        if (TRANS_B) {
            y0 = b_k(rb0, k0); y1 = b_k(rb1, k0); y2 = b_k(rb2, k0); y3 = b_k(rb3, k0);
            y4 = b_k(rb4, k0); y5 = b_k(rb5, k0); y6 = b_k(rb6, k0); y7 = b_k(rb7, k0);
        } else {
            let p0 = b_n(k0, n0); let q0 = b_n(k0, n0 + 4u);
            let p1 = b_n(k0 + 1u, n0); let q1 = b_n(k0 + 1u, n0 + 4u);
            let p2 = b_n(k0 + 2u, n0); let q2 = b_n(k0 + 2u, n0 + 4u);
            let p3 = b_n(k0 + 3u, n0); let q3 = b_n(k0 + 3u, n0 + 4u);
            y0 = vec4<f32>(p0.x, p1.x, p2.x, p3.x); y1 = vec4<f32>(p0.y, p1.y, p2.y, p3.y);
            y2 = vec4<f32>(p0.z, p1.z, p2.z, p3.z); y3 = vec4<f32>(p0.w, p1.w, p2.w, p3.w);
            y4 = vec4<f32>(q0.x, q1.x, q2.x, q3.x); y5 = vec4<f32>(q0.y, q1.y, q2.y, q3.y);
            y6 = vec4<f32>(q0.z, q1.z, q2.z, q3.z); y7 = vec4<f32>(q0.w, q1.w, q2.w, q3.w);
        }
        c00 = dots(c00, x0, y0, y1, y2, y3); c01 = dots(c01, x0, y4, y5, y6, y7);
        c10 = dots(c10, x1, y0, y1, y2, y3); c11 = dots(c11, x1, y4, y5, y6, y7);
        c20 = dots(c20, x2, y0, y1, y2, y3); c21 = dots(c21, x2, y4, y5, y6, y7);
        c30 = dots(c30, x3, y0, y1, y2, y3); c31 = dots(c31, x3, y4, y5, y6, y7);
        c40 = dots(c40, x4, y0, y1, y2, y3); c41 = dots(c41, x4, y4, y5, y6, y7);
        c50 = dots(c50, x5, y0, y1, y2, y3); c51 = dots(c51, x5, y4, y5, y6, y7);
        c60 = dots(c60, x6, y0, y1, y2, y3); c61 = dots(c61, x6, y4, y5, y6, y7);
        c70 = dots(c70, x7, y0, y1, y2, y3); c71 = dots(c71, x7, y4, y5, y6, y7);
    }
    // The stores as one loop over the rows, each row's sums shifted into c00 and c01 (one copy
    // of the store's code for llvmpipe to compile, and no private array indexed at run time)
    let c_off = params.c_base + z * params.m * params.n;
    var cb_lo = vec4<f32>(0.0);
    var cb_hi = vec4<f32>(0.0);
    if (params.has_bias == 1u) {
        let last = params.n - 1u;
        cb_lo = vec4<f32>(f32(bias[min(n0, last)]), f32(bias[min(n0 + 1u, last)]),
                          f32(bias[min(n0 + 2u, last)]), f32(bias[min(n0 + 3u, last)]));
        cb_hi = vec4<f32>(f32(bias[min(n0 + 4u, last)]), f32(bias[min(n0 + 5u, last)]),
                          f32(bias[min(n0 + 6u, last)]), f32(bias[min(n0 + 7u, last)]));
    }
    for (var i = 0u; i < 8u; i++) {
        store_row(c_off, m0 + i, n0, c00, c01, cb_lo, cb_hi);
        c00 = c10; c01 = c11; c10 = c20; c11 = c21; c20 = c30; c21 = c31; c30 = c40; c31 = c41;
        c40 = c50; c41 = c51; c50 = c60; c51 = c61; c60 = c70; c61 = c71;
    }
}
