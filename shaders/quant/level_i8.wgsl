// A row's int8 quantization, shared by quant/quantize_rows_i8 and the producers that quantize
// the rows they write (quant/layer_norm_i8, quant/gelu_i8): the reciprocal step of a row whose
// largest magnitude is `largest` (0 for a zero row), and one value's level (scaled, rounded to
// nearest even, clamped to +-127) in byte j of its little-endian word.
fn row_inverse(largest: f32) -> f32 {
    return select(127.0 / largest, 0.0, largest == 0.0);
}

fn level_byte(v: f32, inverse: f32, j: u32) -> u32 {
    let level = clamp(round(v * inverse), -127.0, 127.0);
    return (bitcast<u32>(i32(level)) & 0xffu) << (8u * j);
}
