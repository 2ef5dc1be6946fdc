// out = cond ? a : b with numpy broadcasting over all three (see binary.wgsl for the
// collapsed six-dimension plan and the scalar-in-params convention).
alias T = f32;  // storage element type of a, b and out
alias C = f32;  // type a scalar operand's bits are stored as (f32 for f16 storage)
alias Cond = u32;  // condition element type (32 bits): nonzero is true, NaN included
override RANK: u32 = 1u;  // dimensions of the collapsed plan, 1 to 6
override A_PARAM: bool = false;
override B_PARAM: bool = false;
override COND_FLOAT: bool = false;  // Cond is f32
override WG: u32 = 256u;

struct Params {
    n: u32, a_bits: u32, b_bits: u32,
    d0: u32, d1: u32, d2: u32, d3: u32, d4: u32,
    a0: u32, a1: u32, a2: u32, a3: u32, a4: u32, a5: u32,
    b0: u32, b1: u32, b2: u32, b3: u32, b4: u32, b5: u32,
    c0: u32, c1: u32, c2: u32, c3: u32, c4: u32, c5: u32,
}

@group(0) @binding(0) var<storage, read> cond: array<Cond>;
@group(0) @binding(1) var<storage, read> a: array<T>;
@group(0) @binding(2) var<storage, read> b: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;
@group(0) @binding(4) var<uniform> params: Params;

fn offsets(i: u32) -> vec3<u32> {
    // Specialized by RANK: the steps past it fold away when the pipeline is built.
    var r = i;
    var o = vec3<u32>(0u);
    if (RANK <= 1u) {
        return o + r * vec3<u32>(params.c0, params.a0, params.b0);
    }
    o += (r % params.d0) * vec3<u32>(params.c0, params.a0, params.b0);
    r /= params.d0;
    if (RANK <= 2u) {
        return o + r * vec3<u32>(params.c1, params.a1, params.b1);
    }
    o += (r % params.d1) * vec3<u32>(params.c1, params.a1, params.b1);
    r /= params.d1;
    if (RANK <= 3u) {
        return o + r * vec3<u32>(params.c2, params.a2, params.b2);
    }
    o += (r % params.d2) * vec3<u32>(params.c2, params.a2, params.b2);
    r /= params.d2;
    if (RANK <= 4u) {
        return o + r * vec3<u32>(params.c3, params.a3, params.b3);
    }
    o += (r % params.d3) * vec3<u32>(params.c3, params.a3, params.b3);
    r /= params.d3;
    if (RANK <= 5u) {
        return o + r * vec3<u32>(params.c4, params.a4, params.b4);
    }
    o += (r % params.d4) * vec3<u32>(params.c4, params.a4, params.b4);
    r /= params.d4;
    return o + r * vec3<u32>(params.c5, params.a5, params.b5);
}

// numpy's truth: nonzero. Read on the bits, so that a float's NaN is true (a compiler may
// assume no NaN and compare it as 0) and -0.0 false.
fn truthy(c: Cond) -> bool {
    let bits = bitcast<u32>(c);
    if (COND_FLOAT) {
        return (bits & 0x7fffffffu) != 0u;
    }
    return bits != 0u;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= params.n) {
        return;
    }
    let o = offsets(i);
    if (truthy(cond[o.x])) {
        if (A_PARAM) {
            out[i] = T(bitcast<C>(params.a_bits));
        } else {
            out[i] = a[o.y];
        }
    } else if (B_PARAM) {
        out[i] = T(bitcast<C>(params.b_bits));
    } else {
        out[i] = b[o.z];
    }
}
