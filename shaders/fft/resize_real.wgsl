//! parts: fft/axis
// out[bt, k, c] = x[bt, k', c] for k < n_in, 0 up to n_out, with k' = k, or n_in - 1 - k when
// FLIP (a reversed, zero-padded filter for FFT correlation): crops or zero-pads one axis of
// a real (batch, n, stride) array.
override FLIP: bool = false;
override WG: u32 = 256u;

struct Params {
    n_in: u32,
    n_out: u32,
    stride: u32,
    total: u32,  // batch * n_out * stride
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
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
        let src = select(p.y, params.n_in - 1u - p.y, FLIP);
        v = x[axis_at(p, src, params.n_in, params.stride)];
    }
    out[i] = v;
}
