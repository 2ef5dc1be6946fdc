"""WGSL functions that generated kernels call where WGSL lacks a builtin with numpy's meaning.

Written for f32 (f16 values are widened for the math) and for i32; the u32 version of an
integer helper is its i32 text with the type renamed. A kernel's source holds only the
helpers it uses.
"""

from __future__ import annotations

import re

__all__ = ["helper_source"]

_F32 = {
    # numpy's x**y: x**0 == 1, 0**y, negative bases with integral exponents (NaN otherwise)
    "float_power": """
fn float_power(x: f32, y: f32) -> f32 {
    if (y == 0.0) { return 1.0; }
    if (x == 0.0) { return select(0.0, f32_bits(0x7f800000u), y < 0.0); }
    let m = pow(abs(x), y);
    if (x > 0.0) { return m; }
    if (fract(y) != 0.0) { return f32_bits(0x7fc00000u); }
    return select(m, -m, fract(y * 0.5) != 0.0);
}""",
    # IEEE division by zero, as numpy gives it: WGSL leaves x / 0 an indeterminate value, and
    # Dawn on NVIDIA returned a number for 0 / 0 (x / x with x = 0). Only y == 0 takes the
    # slow path; inf and NaN come from bit patterns (never constants Tint would reject)
    "float_divide": """
fn float_divide(x: f32, y: f32) -> f32 {
    if (y != 0.0) { return x / y; }
    let magnitude = bitcast<u32>(x) & 0x7fffffffu;
    if (magnitude == 0u || magnitude > 0x7f800000u) { return f32_bits(0x7fc00000u); }
    return f32_bits(0x7f800000u | ((bitcast<u32>(x) ^ bitcast<u32>(y)) & 0x80000000u));
}""",
    # Python's modulo takes the divisor's sign
    "float_mod": """
fn float_mod(a: f32, b: f32) -> f32 {
    return a - b * floor(a / b);
}""",
    # Cephes tanhf: some drivers compute tanh as sinh/cosh, which is NaN past |x| ~ 89
    "tanh_f32": """
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
}""",
    # Cephes tanf: Dawn on NVIDIA computes tan as sin / cos, ~1e-4 off (relative) near the
    # poles. |x| goes to [-pi/4, pi/4] by a three-part pi/4 (j even), a polynomial there,
    # and -1/tan for the odd quadrants; past 8192 the reduction loses digits: the builtin
    "tan_f32": """
fn tan_f32(x: f32) -> f32 {
    let a = abs(x);
    if (a > 8192.0) { return tan(x); }
    var j = u32(a * 1.2732395447351628);
    j += j & 1u;
    let y = f32(j);
    let z = ((a - y * 0.78515625) - y * 2.4187564849853515625e-4) - y * 3.77489497744594108e-8;
    let zz = z * z;
    let t = (((((9.38540185543e-3 * zz + 3.11992232697e-3) * zz + 2.44301354525e-2) * zz
               + 5.34112807005e-2) * zz + 1.33387994085e-1) * zz + 3.33331568548e-1) * zz * z + z;
    let r = select(t, -1.0 / t, (j & 2u) != 0u);
    return select(r, -r, x < 0.0);
}""",
    # Near 0 a series (log1p through atanh: log1p(x) = 2 atanh(x / (2 + x))), as drivers'
    # log and exp near 1 have only absolute accuracy; farther out Kahan's corrections
    "log1p_f32": """
fn log1p_f32(x: f32) -> f32 {
    if (abs(x) < 0.35) {
        let s = x / (2.0 + x);
        let z = s * s;
        return 2.0 * s * (1.0 + z * (1.0 / 3.0 + z * (0.2 + z * (1.0 / 7.0 + z * (1.0 / 9.0
            + z * (1.0 / 11.0))))));
    }
    let u = 1.0 + x;
    return log(u) * x / (u - 1.0);
}""",
    "expm1_f32": """
fn expm1_f32(x: f32) -> f32 {
    if (abs(x) < 0.35) {
        return x * (1.0 + x / 2.0 * (1.0 + x / 3.0 * (1.0 + x / 4.0 * (1.0 + x / 5.0
            * (1.0 + x / 6.0 * (1.0 + x / 7.0 * (1.0 + x / 8.0)))))));
    }
    return exp(x) - 1.0;
}""",
    # erfc for z >= 0: Numerical Recipes' "erfcc" (fractional error < 1.2e-7); WGSL has no erf
    "erfc_pos": """
fn erfc_pos(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))));
    let zc = min(z, 10.0);
    return select(t * exp(p - zc * zc), 0.0, z > 10.0);
}""",
    "erf_f32": """
fn erf_f32(x: f32) -> f32 {
    return sign(x) * (1.0 - erfc_pos(abs(x)));
}""",
    "erfc_f32": """
fn erfc_f32(x: f32) -> f32 {
    let c = erfc_pos(abs(x));
    return select(2.0 - c, c, x >= 0.0);
}""",
    # Cephes asinf/acosf: drivers' asin (Vulkan: atan2(x, sqrt(1 - x * x))) is off by
    # ~2e-4 on lavapipe; past |x| = 0.5 the identity asin(x) = pi/2 - 2 asin(sqrt((1-x)/2))
    # keeps the polynomial's argument small
    "asin_f32": """
fn asin_core(a: f32) -> f32 {
    let z = a * a;
    return ((((4.2163199048e-2 * z + 2.4181311049e-2) * z + 4.5470025998e-2) * z
             + 7.4953002686e-2) * z + 1.6666752422e-1) * z * a + a;
}
fn asin_f32(x: f32) -> f32 {
    let a = abs(x);
    let r = select(asin_core(a), 1.5707963267948966 - 2.0 * asin_core(sqrt(0.5 * (1.0 - a))),
                   a > 0.5);
    return select(r, f32_bits(0x7fc00000u), a > 1.0) * sign(x);
}""",
    "acos_f32": """
fn acos_f32(x: f32) -> f32 {
    if (abs(x) <= 0.5) { return 1.5707963267948966 - asin_f32(x); }
    let h = 2.0 * asin_f32(sqrt(0.5 * (1.0 - abs(x))));
    return select(h, 3.141592653589793 - h, x < 0.0);
}""",
    # scaled so that neither square overflows
    "hypot_f32": """
fn hypot_f32(a: f32, b: f32) -> f32 {
    let m = max(abs(a), abs(b));
    if (m == 0.0 || m > 3.4028234e38) { return m; }
    let x = a / m;
    let y = b / m;
    return m * sqrt(x * x + y * y);
}""",
    # WGSL lets compilers assume no NaN or inf, so x != x may fold away: test the bits
    "isnan_f32": """
fn isnan_f32(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}""",
    "isinf_f32": """
fn isinf_f32(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) == 0x7f800000u;
}""",
    "isfinite_f32": """
fn isfinite_f32(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) < 0x7f800000u;
}""",
    "copysign_f32": """
fn copysign_f32(a: f32, b: f32) -> f32 {
    return bitcast<f32>((bitcast<u32>(a) & 0x7fffffffu) | (bitcast<u32>(b) & 0x80000000u));
}""",
}

_I32 = {
    # floor division and modulo as numpy's: round toward -inf; x // 0 == x % 0 == 0. The
    # remainder is a - q * b: GLSL (the OpenGL backend) leaves % of negatives undefined
    "floordiv": """
fn floordiv_i32(a: i32, b: i32) -> i32 {
    if (b == i32(0)) { return i32(0); }
    let q = a / b;
    return select(q, q - i32(1), (a - q * b != i32(0)) && ((a < i32(0)) != (b < i32(0))));
}""",
    "mod": """
fn mod_i32(a: i32, b: i32) -> i32 {
    if (b == i32(0)) { return i32(0); }
    let r = a - (a / b) * b;
    return select(r, r + b, (r != i32(0)) && ((r < i32(0)) != (b < i32(0))));
}""",
    # square and multiply, wrapping like numpy; a negative exponent gives 0 unless |x| == 1
    "int_power": """
fn int_power_i32(x: i32, y: i32) -> i32 {
    if (y < i32(0)) {
        if (x == i32(1)) { return i32(1); }
        if (x + i32(1) == i32(0)) { return select(i32(1), x, (u32(y) & 1u) != 0u); }
        return i32(0);
    }
    var result = i32(1);
    var base = x;
    var k = u32(y);
    loop {
        if ((k & 1u) != 0u) { result *= base; }
        k >>= 1u;
        if (k == 0u) { break; }
        base *= base;
    }
    return result;
}""",
}

_NEEDS = {"erf_f32": ("erfc_pos",), "erfc_f32": ("erfc_pos",), "acos_f32": ("asin_f32",)}


def helper_source(name: str, t: str = "f32") -> tuple[str, str]:
    """(function name, WGSL text) of helper `name` for type `t` (i32/u32 for integer ones)."""
    if name in _F32:
        return name, _F32[name].strip()
    text = _I32[name].strip()
    if t == "u32":
        # the i32 text with `< i32(0)` tests is valid for u32, where they are simply false
        text = re.sub(r"\bi32\b", "u32", text)
    fn = re.search(r"fn (\w+)", text)
    assert fn is not None
    return fn.group(1), text


def dependencies(name: str) -> tuple[str, ...]:
    """Other helpers `name` calls."""
    return _NEEDS.get(name, ())
