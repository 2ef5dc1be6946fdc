// The register tile of shaders/linalg/gemm.wgsl and shaders/nn/conv2d.wgsl (appended to both
// through their `//! parts:` line): an invocation's 8 x 8 outputs in 16 named vec4
// accumulators, and the outer product one k step adds to them. Named variables, not an
// array: naga bounds every loop with a counter, so drivers cannot unroll one, and a
// dynamically indexed private array lives in slow local memory. With gemm's TM or TN = 4 the
// unused half is never stored and the compiler drops it.
//
// c{i}{h}: row i of the invocation's 8 (0-3: its first group of 4 rows, 4-7: its second),
// columns 0-3 (h = 0) or 4-7 (h = 1) of its 8.
var<private> c00: vec4<f32>; var<private> c01: vec4<f32>;
var<private> c10: vec4<f32>; var<private> c11: vec4<f32>;
var<private> c20: vec4<f32>; var<private> c21: vec4<f32>;
var<private> c30: vec4<f32>; var<private> c31: vec4<f32>;
var<private> c40: vec4<f32>; var<private> c41: vec4<f32>;
var<private> c50: vec4<f32>; var<private> c51: vec4<f32>;
var<private> c60: vec4<f32>; var<private> c61: vec4<f32>;
var<private> c70: vec4<f32>; var<private> c71: vec4<f32>;

// c += outer(a column, b row): rows 0-3 from a_lo and 4-7 from a_hi, columns 0-3 from b0
// and 4-7 from b1, one fma per output (the order every tile of both kernels shares).
fn outer(a_lo: vec4<f32>, a_hi: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>) {
    c00 = fma(vec4<f32>(a_lo.x), b0, c00); c01 = fma(vec4<f32>(a_lo.x), b1, c01);
    c10 = fma(vec4<f32>(a_lo.y), b0, c10); c11 = fma(vec4<f32>(a_lo.y), b1, c11);
    c20 = fma(vec4<f32>(a_lo.z), b0, c20); c21 = fma(vec4<f32>(a_lo.z), b1, c21);
    c30 = fma(vec4<f32>(a_lo.w), b0, c30); c31 = fma(vec4<f32>(a_lo.w), b1, c31);
    c40 = fma(vec4<f32>(a_hi.x), b0, c40); c41 = fma(vec4<f32>(a_hi.x), b1, c41);
    c50 = fma(vec4<f32>(a_hi.y), b0, c50); c51 = fma(vec4<f32>(a_hi.y), b1, c51);
    c60 = fma(vec4<f32>(a_hi.z), b0, c60); c61 = fma(vec4<f32>(a_hi.z), b1, c61);
    c70 = fma(vec4<f32>(a_hi.w), b0, c70); c71 = fma(vec4<f32>(a_hi.w), b1, c71);
}
