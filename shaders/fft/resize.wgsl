//! parts: fft/axis
// out[bt, k, c] = scale * (k < n_in ? x[bt, k, c] * w[k] : 0) for k < n_out: crops or
// zero-pads one axis of a complex array laid out as (batch, n, stride). With CHIRP the point
// is multiplied by w[k] (Bluestein's chirp and filter spectrum); without it w is not read.
override CHIRP: bool = false;
override WG: u32 = 256u;

struct Params {
    n_in: u32,
    n_out: u32,
    stride: u32,
    total: u32,  // batch * n_out * stride
    scale: f32,
}

@group(0) @binding(0) var<storage, read> x: array<vec2<f32>>;
@group(0) @binding(1) var<storage, read> w: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<vec2<f32>>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= params.total) {
        return;
    }
    let p = axis_point(i, params.n_out, params.stride);
    var v = vec2<f32>(0.0);
    if (p.y < params.n_in) {
        v = x[axis_at(p, p.y, params.n_in, params.stride)];
        if (CHIRP) {
            let a = w[p.y];
            v = vec2<f32>(v.x * a.x - v.y * a.y, v.x * a.y + v.y * a.x);
        }
    }
    out[i] = v * params.scale;
}
