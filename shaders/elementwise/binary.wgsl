//! parts: elementwise/binary_operands + elementwise/float_divmod
// out = a OP b with numpy broadcasting (the operands, the collapsed plan and the scalars in
// params: binary_operands.wgsl; is_nan and the float divmod: float_divmod.wgsl). Comparisons
// (OP 7 to 12) write u32 0/1, gpustd's bool.
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
    let o = offsets(i);
    var x = bitcast<C>(params.a_bits);
    var y = bitcast<C>(params.b_bits);
    if (!A_PARAM) {
        x = C(a[o.x]);
    }
    if (!B_PARAM) {
        y = C(b[o.y]);
    }
    if (OP >= 7u && OP <= 12u) {
        out[i] = Out(select(0u, 1u, compare(x, y)));
    } else {
        out[i] = Out(apply(x, y));
    }
}
