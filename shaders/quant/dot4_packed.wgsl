// dot4 for quant/gemm_w8a8: the four products of two words of packed int8, summed, by WGSL's
// dot4I8Packed (language feature packed_4x8_integer_dot_product).
fn dot4(x: i32, y: i32) -> i32 {
    return dot4I8Packed(bitcast<u32>(x), bitcast<u32>(y));
}
