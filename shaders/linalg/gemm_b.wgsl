// B of shaders/linalg/gemm.wgsl as floats: T, or vec4<T> with VEC_B (appended through its
// `//! parts:` line; quant/gemm_b_*.wgsl read GGML blocks instead).
@group(0) @binding(1) var<storage, read> b: array<BV>;

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
