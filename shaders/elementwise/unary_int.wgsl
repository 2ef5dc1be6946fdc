// out = f(x) for integer storage (i32, u32): the few unary ops that make sense there
// (invert: gpustd.bitwise).
// Arithmetic wraps like numpy's fixed-width integers.
alias T = i32;
override OP: u32 = 0u;  // 0 clip, 1 abs, 2 negative, 3 invert
override WG: u32 = 256u;

// Bounds travel as raw bits so one struct serves i32 and u32.
struct Params { n: u32, lo_bits: u32, hi_bits: u32 }

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= params.n) {
        return;
    }
    let v = x[i];
    switch OP {
        case 0u: { out[i] = min(max(v, bitcast<T>(params.lo_bits)), bitcast<T>(params.hi_bits)); }
        case 1u: { out[i] = abs(v); }
        case 3u: { out[i] = ~v; }
        default: { out[i] = T(0) - v; }
    }
}
