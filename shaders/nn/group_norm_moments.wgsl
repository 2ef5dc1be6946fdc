// One chunk's GroupNorm statistics (appended through the `//! parts:` line of
// group_norm_stats.wgsl and group_norm_apply.wgsl, which declare x as array<V>, T, W and WG):
// (count, mean, M2) from two passes over its elements (the second hits cache), which stays
// accurate where a one-pass sum of squares would cancel. The mean is kept relative to the
// group's first element x0 (`shift`), so a large common offset costs no digits in float32.
var<workgroup> red: array<f32, WG>;

fn workgroup_sum(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

// (count, mean - shift, M2) of elements [begin, end) of x; every invocation calls it.
fn chunk_moments(begin: u32, end: u32, shift: f32, lid: u32) -> vec3<f32> {
    // vec4<T>(x[i]) splats a scalar (W = 1) and is x[i] itself for W = 4: `lanes` counts
    // the splat once
    let lanes = select(vec4<f32>(1.0, 0.0, 0.0, 0.0), vec4<f32>(1.0), W == 4u);
    var s = 0.0;
    for (var i = (begin / W) + lid; i < end / W; i += WG) {
        s += dot(vec4<f32>(vec4<T>(x[i])) - shift, lanes);
    }
    let count = f32(end - begin);
    let delta = workgroup_sum(s, lid) / count;
    var q = 0.0;
    for (var i = (begin / W) + lid; i < end / W; i += WG) {
        let d = (vec4<f32>(vec4<T>(x[i])) - shift) - delta;
        q += dot(d * d, lanes);
    }
    return vec3<f32>(count, delta, workgroup_sum(q, lid));
}
