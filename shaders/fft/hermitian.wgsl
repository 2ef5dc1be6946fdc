//! parts: fft/axis
// The full n-point spectrum of a real signal from its first n/2 + 1 points (irfft along an
// axis other than the last): out[k] = X[k] for k <= n/2, conj(X[n - k]) above, where X is
// x's axis cropped or zero-padded to n/2 + 1 (points past m_in read as 0). Layout
// (batch, points, stride) on both sides.
override WG: u32 = 256u;

struct Params {
    m_in: u32,   // points given along the axis
    n: u32,      // points of the full spectrum
    stride: u32,
    total: u32,  // batch * n * stride
}

@group(0) @binding(0) var<storage, read> x: array<vec2<f32>>;
@group(0) @binding(1) var<storage, read_write> out: array<vec2<f32>>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= params.total) {
        return;
    }
    let p = axis_point(i, params.n, params.stride);
    let mirrored = p.y > params.n / 2u;
    let src = select(p.y, params.n - p.y, mirrored);
    var v = vec2<f32>(0.0);
    if (src < params.m_in) {
        v = x[axis_at(p, src, params.m_in, params.stride)];
    }
    out[i] = select(v, vec2<f32>(v.x, -v.y), mirrored);
}
