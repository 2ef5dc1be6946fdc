// out[i] = y[start + i'] with i' = count - 1 - i when flip, else i: the requested window of
// a full FFT convolution (numpy's full/same/valid modes), reversed where numpy.correlate
// swaps its arguments.
override WG: u32 = 256u;

struct Params {
    start: u32,
    count: u32,
    flip: u32,
}

@group(0) @binding(0) var<storage, read> y: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i < params.count) {
        out[i] = y[params.start + select(i, params.count - 1u - i, params.flip != 0u)];
    }
}
