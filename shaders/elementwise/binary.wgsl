// out = a OP b with numpy broadcasting. The host collapses the broadcast into at most six
// dimensions (innermost first: d0..d5) with one element stride per operand (0 where that
// operand is broadcast); the pipeline is specialized on that RANK, so a rank-1 plan (same
// shapes, or one side of one element) does no divisions at all. A Python scalar operand
// arrives as the bits of a C value in params (A_PARAM / B_PARAM); its buffer binding is
// then a placeholder that is never read. Comparisons (OP 7 to 12) write u32 0/1, gpustd's bool.
alias T = f32;  // storage element type of a and b
alias C = f32;  // compute type: f32 for f16 storage (pow, division), else T
alias Out = T;  // storage element type of out: T, or u32 for comparisons
override OP: u32 = 0u;  // 0 add, 1 subtract, 2 multiply, 3 divide, 4 power, 5 maximum, 6 minimum,
                        // 7 equal, 8 not_equal, 9 less, 10 less_equal, 11 greater, 12 greater_equal
override RANK: u32 = 1u;  // dimensions of the collapsed plan, 1 to 6
override A_PARAM: bool = false;
override B_PARAM: bool = false;
override IS_FLOAT: bool = true;
override WG: u32 = 256u;

struct Params {
    n: u32, a_bits: u32, b_bits: u32,
    d0: u32, d1: u32, d2: u32, d3: u32, d4: u32,
    a0: u32, a1: u32, a2: u32, a3: u32, a4: u32, a5: u32,
    b0: u32, b1: u32, b2: u32, b3: u32, b4: u32, b5: u32,
}

@group(0) @binding(0) var<storage, read> a: array<T>;
@group(0) @binding(1) var<storage, read> b: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<Out>;
@group(0) @binding(3) var<uniform> params: Params;

fn offsets(i: u32) -> vec2<u32> {
    // Specialized by RANK: the steps past it fold away when the pipeline is built.
    var r = i;
    var o = vec2<u32>(0u);
    if (RANK <= 1u) {
        return o + r * vec2<u32>(params.a0, params.b0);
    }
    o += (r % params.d0) * vec2<u32>(params.a0, params.b0);
    r /= params.d0;
    if (RANK <= 2u) {
        return o + r * vec2<u32>(params.a1, params.b1);
    }
    o += (r % params.d1) * vec2<u32>(params.a1, params.b1);
    r /= params.d1;
    if (RANK <= 3u) {
        return o + r * vec2<u32>(params.a2, params.b2);
    }
    o += (r % params.d2) * vec2<u32>(params.a2, params.b2);
    r /= params.d2;
    if (RANK <= 4u) {
        return o + r * vec2<u32>(params.a3, params.b3);
    }
    o += (r % params.d3) * vec2<u32>(params.a3, params.b3);
    r /= params.d3;
    if (RANK <= 5u) {
        return o + r * vec2<u32>(params.a4, params.b4);
    }
    o += (r % params.d4) * vec2<u32>(params.a4, params.b4);
    r /= params.d4;
    return o + r * vec2<u32>(params.a5, params.b5);
}

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
    if (OP >= 7u) {
        out[i] = Out(select(0u, 1u, compare(x, y)));
    } else {
        out[i] = Out(apply(x, y));
    }
}
