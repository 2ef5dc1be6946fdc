// B of shaders/linalg/gemm.wgsl as GGML Q5_0 blocks (a quantized linear weight, n x k with
// TRANS_B; blocks of 32 values in 22 bytes along k: an f16 scale, 32 fifth bits, 16 bytes of
// nibbles, low nibbles the first 16 values): dequantized as the tile loads it, each value
// scale * (q - 16) rounded to T as quant/dequantize.wgsl's q5_0 writes it, so the sums equal
// the dequantize-then-GEMM path's bit for bit. Q4_K files hold it where a row is not whole
// super-blocks. col is a multiple of 4: the four values share a block and a nibble half.
@group(0) @binding(1) var<storage, read> b: array<u32>;

fn b_byte(i: u32) -> u32 {
    return (b[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu;
}

fn load_b(r: u32, col: u32, rows: u32, cols: u32) -> vec4<f32> {
    if (r >= rows || col >= cols) { return vec4<f32>(0.0); }
    let i = b_off + r * cols + col;
    let at = (i / 32u) * 22u;
    let j = i % 32u;
    let scale = unpack2x16float(b_byte(at) | (b_byte(at + 1u) << 8u)).x;
    let high = (b_byte(at + 2u) | (b_byte(at + 3u) << 8u) | (b_byte(at + 4u) << 16u)
                | (b_byte(at + 5u) << 24u)) >> j;
    let qs = at + 6u + (j & 15u);
    let shift = (j >> 4u) * 4u;
    let low = vec4<u32>(b_byte(qs), b_byte(qs + 1u), b_byte(qs + 2u), b_byte(qs + 3u));
    let q = ((low >> vec4<u32>(shift)) & vec4<u32>(0xfu))
            | ((vec4<u32>(high, high >> 1u, high >> 2u, high >> 3u) & vec4<u32>(1u)) << vec4<u32>(4u));
    return vec4<f32>(vec4<T>(scale * vec4<f32>(vec4<i32>(q) - vec4<i32>(16))));
}
