// dot4 for quant/gemm_w8a8 in i32 arithmetic, where dot4I8Packed is missing: each byte
// sign-extended (extractBits of an i32) and multiplied.
fn dot4(x: i32, y: i32) -> i32 {
    var sum = 0;
    for (var j = 0u; j < 32u; j += 8u) { sum += extractBits(x, j, 8u) * extractBits(y, j, 8u); }
    return sum;
}
