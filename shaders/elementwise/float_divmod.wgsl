// numpy's float floor_divide and remainder (npy_divmod), exact: shared by the tensor ops
// (appended to elementwise/binary.wgsl through its `//! parts:` line) and by the kernels the
// Python-kernel compiler generates (gpustd.kernel_compiler pastes this file in where a kernel
// uses // or % on floats). It also gives binary.wgsl its NaN and inf tests on the bits.

// NaN tested on the bits (compilers may fold v != v to false).
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

fn is_inf(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) == 0x7f800000u;
}

// A float from its bits; a function argument, not a constant, which Tint refuses inf and NaN as.
fn from_bits(bits: u32) -> f32 {
    return bitcast<f32>(bits);
}

// C's fmod(x, y) for finite x and finite nonzero y, exact as C's (WGSL's % rounds
// x - y * trunc(x / y) twice; an fma would round once only where the device fuses it): long
// division of the significands in integers, 8 bits a step where musl's fmodf takes one.
fn fmod_finite(x: f32, y: f32) -> f32 {
    let bx = bitcast<u32>(x) & 0x7fffffffu;
    let by = bitcast<u32>(y) & 0x7fffffffu;
    if (bx < by) {
        return x;
    }
    // |v| = significand * 2^(exponent - 150), the implicit bit set where v is normal
    var ex = i32(bx >> 23u);
    var ey = i32(by >> 23u);
    var mx = bx & 0x7fffffu;
    var my = by & 0x7fffffu;
    if (ex == 0) {
        ex = 1;
    } else {
        mx |= 0x800000u;
    }
    if (ey == 0) {
        ey = 1;
    } else {
        my |= 0x800000u;
    }
    var r = mx % my;
    var steps = ex - ey;
    while (steps > 0) {
        let k = u32(min(steps, 8));
        r = (r << k) % my;  // r < my < 2^24: 8 more bits still fit a u32
        steps -= i32(k);
    }
    // r * 2^(ey - 150) assembled from bits (an ldexp could flush a small result to zero)
    var bits = 0u;
    if (r != 0u) {
        let lead = firstLeadingBit(r);
        let biased = ey + i32(lead) - 23;
        if (biased >= 1) {
            bits = (u32(biased) << 23u) | ((r << (23u - lead)) & 0x7fffffu);
        } else {
            bits = r << u32(ey - 1);  // subnormal
        }
    }
    return from_bits(bits | (bitcast<u32>(x) & 0x80000000u));
}

// numpy's npy_divmod: (x // y, x % y), the remainder signed like y and the quotient snapped
// to the integer that x - remainder is a multiple of. Its specials spelled out (a compiler may
// assume no inf or NaN in arithmetic): x // 0 is +-inf (0 // 0 NaN) and x % 0 NaN; otherwise
// an inf x or a NaN gives NaN; x % +-inf is x, or +-inf where the signs differ (quotient -1).
fn float_divmod(x: f32, y: f32) -> vec2<f32> {
    let nan = from_bits(0x7fc00000u);
    let sign_q = (bitcast<u32>(x) ^ bitcast<u32>(y)) & 0x80000000u;  // the sign of x / y
    let zero_y = from_bits(bitcast<u32>(y) & 0x80000000u);  // copysign(0, y)
    if (is_nan(x) || is_nan(y)) {
        return vec2<f32>(nan);
    }
    if (y == 0.0) {
        return vec2<f32>(select(from_bits(sign_q | 0x7f800000u), nan, x == 0.0), nan);
    }
    if (is_inf(x)) {
        return vec2<f32>(nan);
    }
    if (is_inf(y)) {
        if (x != 0.0 && (x < 0.0) != (y < 0.0)) {
            return vec2<f32>(-1.0, y);
        }
        return vec2<f32>(from_bits(sign_q), select(x, zero_y, x == 0.0));
    }
    var m = fmod_finite(x, y);
    var d = (x - m) / y;
    if (m == 0.0) {
        m = zero_y;
    } else if ((y < 0.0) != (m < 0.0)) {
        m += y;
        d -= 1.0;
    }
    if (d == 0.0) {
        return vec2<f32>(from_bits(sign_q), m);
    }
    var q = floor(d);
    if (d - q > 0.5) {
        q += 1.0;
    }
    return vec2<f32>(q, m);
}
