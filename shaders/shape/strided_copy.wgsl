// dst[region] = src[region] for two strided regions of one shape (up to 6 dims): basic
// indexing, gpustd.indexing's x[key] (src strided, dst contiguous) and x[key] = value (dst
// strided, src broadcast with stride 0). The host passes, per dim d (innermost first), the
// extent and both element strides, signed: a slice with a negative step walks backwards.
alias T = f32;
override WG: u32 = 256u;

struct Params {
    n: u32, rank: u32, src_offset: i32, dst_offset: i32,
    e0: u32, e1: u32, e2: u32, e3: u32, e4: u32, e5: u32,
    s0: i32, s1: i32, s2: i32, s3: i32, s4: i32, s5: i32,
    d0: i32, d1: i32, d2: i32, d3: i32, d4: i32, d5: i32,
}

@group(0) @binding(0) var<storage, read> src: array<T>;
@group(0) @binding(1) var<storage, read_write> dst: array<T>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= params.n) {
        return;
    }
    let extent = array<u32, 6>(params.e0, params.e1, params.e2, params.e3, params.e4, params.e5);
    let src_stride = array<i32, 6>(params.s0, params.s1, params.s2, params.s3, params.s4,
                                   params.s5);
    let dst_stride = array<i32, 6>(params.d0, params.d1, params.d2, params.d3, params.d4,
                                   params.d5);
    var rest = i;
    var s = params.src_offset;
    var d = params.dst_offset;
    for (var k = 0u; k < params.rank; k++) {
        let c = i32(rest % extent[k]);
        rest /= extent[k];
        s += c * src_stride[k];
        d += c * dst_stride[k];
    }
    dst[u32(d)] = src[u32(s)];
}
