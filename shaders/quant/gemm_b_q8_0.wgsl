// B of shaders/linalg/gemm.wgsl as GGML Q8_0 blocks (a quantized linear weight, n x k with
// TRANS_B; blocks of 32 values in 34 bytes, an f16 scale then 32 signed bytes, along k):
// dequantized as the tile loads it, so no float copy of the weight is made. Each value is
// f32(q) * scale rounded to T, as quant/dequantize.wgsl writes it into a T tensor, so this
// GEMM's sums equal the dequantize-then-GEMM path's bit for bit. cols (k) is a multiple of
// 32 and col of 4: the four values share one block and lie in 4 consecutive bytes.
@group(0) @binding(1) var<storage, read> b: array<u32>;

fn load_b(r: u32, col: u32, rows: u32, cols: u32) -> vec4<f32> {
    if (r >= rows || col >= cols) { return vec4<f32>(0.0); }
    let i = b_off + r * cols + col;
    let at = (i / 32u) * 34u;  // even: the scale is one half of a word
    let scale = unpack2x16float(b[at / 4u] >> ((at % 4u) * 8u)).x;
    let q = at + 2u + i % 32u;  // even too: the 4 bytes start at a word or a half word
    var bytes = b[q / 4u];
    if (q % 4u == 2u) { bytes = (bytes >> 16u) | (b[q / 4u + 1u] << 16u); }
    let v = vec4<i32>(bitcast<i32>(bytes << 24u), bitcast<i32>(bytes << 16u),
                      bitcast<i32>(bytes << 8u), bitcast<i32>(bytes)) >> vec4<u32>(24u);
    return vec4<f32>(vec4<T>(vec4<f32>(v) * scale));
}
