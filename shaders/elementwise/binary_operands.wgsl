// The operands of a broadcast binary kernel (appended to shaders/elementwise/binary.wgsl and
// bitwise.wgsl through their `//! parts:` line): out = f(a, b) with numpy broadcasting. The
// host collapses the broadcast into at most six dimensions (innermost first: d0..d5) with one
// element stride per operand (0 where that operand is broadcast); the pipeline is specialized
// on that RANK, so a rank-1 plan (same shapes, or one side of one element) does no divisions
// at all. A Python scalar operand arrives as the bits of a C value in params (A_PARAM /
// B_PARAM); its buffer binding is then a placeholder that is never read. The main file
// declares T, C (the type it computes in), Out, RANK, A_PARAM and B_PARAM.
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

// The elements of a and b that output element i reads.
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

// The operands of output element i, as C.
fn operands(i: u32) -> vec2<C> {
    let o = offsets(i);
    var x = bitcast<C>(params.a_bits);
    var y = bitcast<C>(params.b_bits);
    if (!A_PARAM) {
        x = C(a[o.x]);
    }
    if (!B_PARAM) {
        y = C(b[o.y]);
    }
    return vec2<C>(x, y);
}
