//! parts: elementwise/binary_operands
// out = a OP b with numpy broadcasting (the operands, the collapsed plan and the scalars in
// params: binary_operands.wgsl). Comparisons (OP 7 to 12) write u32 0/1, gpustd's bool.
alias T = f32;  // storage element type of a and b
alias C = f32;  // compute type: f32 for f16 storage (pow, division), else T
alias Out = T;  // storage element type of out: T, or u32 for comparisons
override OP: u32 = 0u;  // 0 add, 1 subtract, 2 multiply, 3 divide, 4 power, 5 maximum, 6 minimum,
                        // 7 equal, 8 not_equal, 9 less, 10 less_equal, 11 greater,
                        // 12 greater_equal, 13 floor_divide, 14 remainder
override RANK: u32 = 1u;  // dimensions of the collapsed plan, 1 to 6
override A_PARAM: bool = false;
override B_PARAM: bool = false;
override IS_FLOAT: bool = true;
override WG: u32 = 256u;

// NaN tested on the bits (compilers may fold v != v to false).
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// numpy semantics that GPU pow (exp2(y * log2(x))) lacks: x**0 == 1**y == 1, NaN otherwise
// propagating (lavapipe's pow gives 0 for a NaN base), 0**y, and negative bases with
// integral exponents.
fn float_power(x: f32, y: f32) -> f32 {
    if (y == 0.0 || x == 1.0) {
        return 1.0;
    }
    if (is_nan(x) || is_nan(y)) {
        return x + y;  // NaN
    }
    if (x == 0.0) {
        var inf_bits = 0x7f800000u;  // a var: Tint refuses inf as a constant expression
        return select(0.0, bitcast<f32>(inf_bits), y < 0.0);
    }
    let m = pow(abs(x), y);
    if (x > 0.0) {
        return m;
    }
    if (fract(y) != 0.0) {
        var nan_bits = 0x7fc00000u;  // a var, as above
        return bitcast<f32>(nan_bits);  // NaN, as numpy gives
    }
    return select(m, -m, fract(y * 0.5) != 0.0);
}

// Square and multiply, wrapping like numpy's int32; a negative exponent gives 0 unless
// |x| == 1 (numpy raises there instead, which a kernel cannot).
fn int_power(x: C, y: C) -> C {
    if (y < C(0)) {
        if (x == C(1)) {
            return C(1);
        }
        if (x + C(1) == C(0)) {
            return select(C(1), x, (i32(y) & 1) != 0);
        }
        return C(0);
    }
    var result = C(1);
    var base = x;
    var k = u32(y);
    loop {
        if ((k & 1u) != 0u) {
            result *= base;
        }
        k >>= 1u;
        if (k == 0u) {
            break;
        }
        base *= base;
    }
    return result;
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

// numpy's integer floor_divide and remainder: the quotient floored, the remainder signed like
// y; both 0 for y == 0 (numpy warns), and MIN // -1 wraps to MIN (WGSL's / gives it). The
// remainder from the quotient, not i32's %: naga's GLSL computes that as unsigned on llvmpipe.
fn int_divmod(x: C, y: C) -> vec2<C> {
    if (y == C(0)) {
        return vec2<C>(C(0));
    }
    var q = x / y;
    var r = x - q * y;
    if (r != C(0) && (r < C(0)) != (y < C(0))) {
        q -= C(1);
        r += y;
    }
    return vec2<C>(q, r);
}

fn divmod(x: C, y: C) -> vec2<C> {
    if (IS_FLOAT) {
        return vec2<C>(float_divmod(f32(x), f32(y)));
    }
    return int_divmod(x, y);
}

// numpy's maximum/minimum: a NaN operand propagates (GPU max/min drop it), else x where
// `x_wins`.
fn pick(x: C, y: C, x_wins: bool) -> C {
    if (IS_FLOAT && is_nan(f32(x))) {
        return x;
    }
    if (IS_FLOAT && is_nan(f32(y))) {
        return y;
    }
    return select(y, x, x_wins);
}

fn apply(x: C, y: C) -> C {
    switch OP {
        case 0u: { return x + y; }
        case 1u: { return x - y; }
        case 2u: { return x * y; }
        case 3u: { return x / y; }
        case 4u: {
            if (IS_FLOAT) {
                return C(float_power(f32(x), f32(y)));
            }
            return int_power(x, y);
        }
        case 5u: { return pick(x, y, x > y); }
        case 13u: { return divmod(x, y).x; }
        case 14u: { return divmod(x, y).y; }
        default: { return pick(x, y, x < y); }
    }
}

// numpy's comparisons: a NaN operand makes every one false but !=. NaN is told by the bits
// before comparing, since a compiler may assume there is none (WGSL allows it).
fn compare(x: C, y: C) -> bool {
    if (IS_FLOAT && (is_nan(f32(x)) || is_nan(f32(y)))) {
        return OP == 8u;
    }
    switch OP {
        case 7u: { return x == y; }
        case 8u: { return x != y; }
        case 9u: { return x < y; }
        case 10u: { return x <= y; }
        case 11u: { return x > y; }
        default: { return x >= y; }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= params.n) {
        return;
    }
    let v = operands(i);
    if (OP >= 7u && OP <= 12u) {
        out[i] = Out(select(0u, 1u, compare(v.x, v.y)));
    } else {
        out[i] = Out(apply(v.x, v.y));
    }
}
