// B of shaders/linalg/gemm.wgsl as GGML Q4_K blocks (a quantized linear weight, n x k with
// TRANS_B; super-blocks of 256 values in 144 bytes along k: f16 d and dmin, 12 bytes of 6-bit
// sub-block scales and mins, 128 bytes of nibbles): dequantized as the tile loads it, each
// value (d * scale) * q - dmin * min rounded to T exactly as quant/dequantize.wgsl's q4_k
// (whose k_scale_min this repeats over this binding), so the sums equal the
// dequantize-then-GEMM path's bit for bit. col is a multiple of 4: the four values share a
// sub-block and one aligned word of nibbles.
@group(0) @binding(1) var<storage, read> b: array<u32>;

fn b_byte(i: u32) -> u32 {
    return (b[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu;
}

fn b_scale_min(at: u32, s: u32) -> vec2<u32> {
    if (s < 4u) {
        return vec2<u32>(b_byte(at + s) & 63u, b_byte(at + s + 4u) & 63u);
    }
    let k = s - 4u;
    let low = b_byte(at + 8u + k);
    return vec2<u32>((low & 0xfu) | ((b_byte(at + k) >> 2u) & 0x30u),
                     (low >> 4u) | ((b_byte(at + 4u + k) >> 2u) & 0x30u));
}

fn load_b(r: u32, col: u32, rows: u32, cols: u32) -> vec4<f32> {
    if (r >= rows || col >= cols) { return vec4<f32>(0.0); }
    let i = b_off + r * cols + col;
    let at = (i / 256u) * 144u;  // a multiple of 16
    let j = i % 256u;
    let s = j / 32u;
    let d = unpack2x16float(b[at / 4u]);  // (d, dmin)
    let sm = b_scale_min(at + 4u, s);
    let scale = d.x * f32(sm.x);
    let shift = d.y * f32(sm.y);
    let word = b[(at + 16u + (s / 2u) * 32u + j % 32u) / 4u] >> ((s % 2u) * 4u);
    let q = vec4<f32>(vec4<u32>(word, word >> 8u, word >> 16u, word >> 24u) & vec4<u32>(0xfu));
    return vec4<f32>(vec4<T>(scale * q - shift));
}
