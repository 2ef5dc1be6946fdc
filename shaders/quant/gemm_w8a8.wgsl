//! parts: quant/dot4_packed | quant/dot4_bytes
// The W8A8 GEMM's portable kernel (adapters without i8 matrix units; gpustd/gemm/int8_units.py
// is the matrix-unit one): C [M, N] = (A [M, K] B [N, K]^T) scale_a[row] scale_b[col]
// (+ beta C) (+ bias[col]), A and B int8 four to an i32 word (little-endian, K padded with
// zeros to whole words: KW words a row), the sums exact in i32 (|sum| < 2^31 for K < 133k).
// A workgroup computes a 64 x 64 tile of C, 4 x 4 per invocation, K in steps of 8 words.
// `dot4` (four products of packed bytes) comes from a part: quant/dot4_packed (WGSL's
// dot4I8Packed) or quant/dot4_bytes (i32 arithmetic).
alias T = f32;
const TILE: u32 = 64u;
const STEP: u32 = 8u;

struct Params { m: u32, n: u32, kw: u32, has_bias: u32, beta: f32 }

@group(0) @binding(0) var<storage, read> a: array<i32>;
@group(0) @binding(1) var<storage, read> b: array<i32>;
@group(0) @binding(2) var<storage, read> scale_a: array<f32>;
@group(0) @binding(3) var<storage, read> scale_b: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<T>;
@group(0) @binding(5) var<storage, read_write> c: array<T>;
@group(0) @binding(6) var<uniform> params: Params;

var<workgroup> sh_a: array<i32, 512>;  // TILE rows x STEP words
var<workgroup> sh_b: array<i32, 512>;

fn stage(m0: u32, n0: u32, k0: u32, tid: u32) {
    for (var q = 0u; q < 2u; q++) {
        let i = tid + q * 256u;
        let row = i / STEP;
        let col = k0 + i % STEP;
        var word_a = 0;
        if (m0 + row < params.m && col < params.kw) { word_a = a[(m0 + row) * params.kw + col]; }
        sh_a[i] = word_a;
        var word_b = 0;
        if (n0 + row < params.n && col < params.kw) { word_b = b[(n0 + row) * params.kw + col]; }
        sh_b[i] = word_b;
    }
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let m0 = wid.y * TILE;
    let n0 = wid.x * TILE;
    var acc: array<array<i32, 4>, 4>;
    for (var k0 = 0u; k0 < params.kw; k0 += STEP) {
        stage(m0, n0, k0, tid);
        workgroupBarrier();
        for (var kk = 0u; kk < STEP; kk++) {
            var av: array<i32, 4>;
            var bv: array<i32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = sh_a[(lid.y * 4u + i) * STEP + kk];
                bv[i] = sh_b[(lid.x * 4u + i) * STEP + kk];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) { acc[i][j] += dot4(av[i], bv[j]); }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            let row = m0 + lid.y * 4u + i;
            let col = n0 + lid.x * 4u + j;
            if (row < params.m && col < params.n) {
                let idx = row * params.n + col;
                var v = f32(acc[i][j]) * scale_a[row] * scale_b[col];
                if (params.beta != 0.0) { v += params.beta * f32(c[idx]); }
                if (params.has_bias == 1u) { v += f32(bias[col]); }
                c[idx] = T(v);
            }
        }
    }
}
