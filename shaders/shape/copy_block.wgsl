// A strided block copy: dst[o * dst_stride + dst_offset + j] = src[o * src_stride + src_offset + j]
// for o < rows, j < width. Concatenate and split along any axis are this with a tensor viewed
// as (outer, axis * inner). V: T, or vec4<T> with every extent counted in vec4s.
alias T = f32;
alias V = T;
override WG: u32 = 256u;

struct Params {
    rows: u32, width: u32,
    src_stride: u32, src_offset: u32,
    dst_stride: u32, dst_offset: u32,
}

@group(0) @binding(0) var<storage, read> src: array<V>;
@group(0) @binding(1) var<storage, read_write> dst: array<V>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= params.rows * params.width) {
        return;
    }
    let o = i / params.width;
    let j = i % params.width;
    dst[o * params.dst_stride + params.dst_offset + j] = src[o * params.src_stride + params.src_offset + j];
}
