// out = f(x) for floating-point storage; f16 is widened to f32 for the math. Each function
// below is written so that no intermediate can overflow for large |x|: some drivers compute
// tanh as sinh/cosh and exp(89) is already inf in f32, which turns into NaN downstream.
alias T = f32;
override OP: u32 = 0u;  // see _OPS in gpustd/unary.py
override WG: u32 = 256u;

struct Params { n: u32, lo: f32, hi: f32 }

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<uniform> params: Params;

// Cephes tanhf: an odd polynomial near 0 keeps the relative error small where 1 - e would
// cancel; beyond |x| = 10 tanh is 1 to f32 precision, so the clamp loses nothing.
fn tanh_f32(v: f32) -> f32 {
    let z = abs(v);
    if (z < 0.625) {
        let s = v * v;
        let p = (((-5.70498872745e-3 * s + 2.06390887954e-2) * s - 5.37397155531e-2) * s
                 + 1.33314422036e-1) * s - 3.33332819422e-1;
        return p * s * v + v;
    }
    let e = exp(2.0 * min(z, 10.0));
    return sign(v) * (1.0 - 2.0 / (e + 1.0));
}

// exp(-|v|) lies in (0, 1], so neither branch can overflow.
fn sigmoid_f32(v: f32) -> f32 {
    let e = exp(-abs(v));
    let s = 1.0 / (1.0 + e);
    return select(e * s, s, v >= 0.0);
}

// erfc(z) for z >= 0: the Chebyshev fit "erfcc" of Numerical Recipes (2nd ed., 6.2), with
// fractional error below 1.2e-7 everywhere; its relative accuracy in the tail keeps
// gelu(x) accurate for negative x, where 1 + erf(x) would cancel. (WGSL has no erf.)
fn erfc_f32(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))));
    let zc = min(z, 10.0);  // erfc(10) < 3e-45: zero in f32; keeps z * z finite
    return select(t * exp(p - zc * zc), 0.0, z > 10.0);
}

fn gelu_f32(v: f32) -> f32 {
    let c = erfc_f32(abs(v) * 0.70710678118654752);
    return v * select(0.5 * c, 1.0 - 0.5 * c, v >= 0.0);
}

// 0.5 (1 + tanh(u)) == sigmoid(2u): the sigmoid form does not cancel for negative x.
fn gelu_tanh_f32(v: f32) -> f32 {
    let u = 0.7978845608028654 * (v + 0.044715 * v * v * v);
    return v * sigmoid_f32(2.0 * u);
}

// NaN tested on the bits (compilers may fold v != v to false).
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

fn apply(v: f32) -> f32 {
    if (is_nan(v)) {
        return v;  // NaN for every op, as in numpy (tanh's sign() and clip's max() drop it)
    }
    switch OP {
        case 0u: { return exp(v); }
        case 1u: { return log(v); }
        case 2u: { return sqrt(v); }
        case 3u: { return inverseSqrt(v); }
        case 4u: { return tanh_f32(v); }
        case 5u: { return sigmoid_f32(v); }
        case 6u: { return v * sigmoid_f32(v); }
        case 7u: { return gelu_f32(v); }
        case 8u: { return gelu_tanh_f32(v); }
        case 9u: { return min(max(v, params.lo), params.hi); }
        case 10u: { return abs(v); }
        default: { return -v; }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i < params.n) {
        out[i] = T(apply(f32(x[i])));
    }
}
