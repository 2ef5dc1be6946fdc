//! parts: fft/axis
// out[bt, k, c] = complex(x[bt, k, c], 0) for k < n_in, 0 up to n_out: a real array made
// complex while one axis of its (batch, n, stride) layout is cropped or zero-padded.
override WG: u32 = 256u;

struct Params {
    n_in: u32,
    n_out: u32,
    stride: u32,
    total: u32,  // batch * n_out * stride
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<vec2<f32>>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= params.total) {
        return;
    }
    let p = axis_point(i, params.n_out, params.stride);
    var v = 0.0;
    if (p.y < params.n_in) {
        v = x[axis_at(p, p.y, params.n_in, params.stride)];
    }
    out[i] = vec2<f32>(v, 0.0);
}
