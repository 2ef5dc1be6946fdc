//! parts: elementwise/binary_operands
// out = a OP b on integers (i32, u32) with numpy broadcasting (the operands, the collapsed
// plan and the scalars in params: binary_operands.wgsl). Comparisons' u32 0/1 stay 0/1
// through and, or and xor, as numpy's bools do.
alias T = i32;  // storage and compute type of a, b and out
alias C = T;
alias Out = T;
override OP: u32 = 0u;  // 0 bitwise_and, 1 bitwise_or, 2 bitwise_xor, 3 left_shift, 4 right_shift
override RANK: u32 = 1u;  // dimensions of the collapsed plan, 1 to 6
override A_PARAM: bool = false;
override B_PARAM: bool = false;
override WG: u32 = 256u;

// numpy's npy_lshift / npy_rshift: a count of the width or more (a negative one read as
// unsigned is) shifts every bit out, leaving 0, or -1 for a negative i32 shifted right.
// WGSL would take the count modulo 32 instead.
fn shift(x: T, y: T) -> T {
    let count = bitcast<u32>(y);
    let bits = count & 31u;
    if (OP == 3u) {
        return select(T(0), x << bits, count < 32u);
    }
    return select(select(T(0), ~T(0), x < T(0)), x >> bits, count < 32u);
}

fn apply(x: T, y: T) -> T {
    switch OP {
        case 0u: { return x & y; }
        case 1u: { return x | y; }
        case 2u: { return x ^ y; }
        default: { return shift(x, y); }
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
    out[i] = apply(v.x, v.y);
}
