// Where the kernels that crop, pad or mirror one axis (fft/promote, resize, resize_real,
// hermitian) find a point: arrays laid out as (batch, n, stride), point k of transform (bt, c)
// at (bt * n + k) * stride + c. A part (`parts` of gpucore.Kernel.cached).

// Element i of a (batch, n, stride) array as (bt, k, c).
fn axis_point(i: u32, n: u32, stride: u32) -> vec3<u32> {
    let rest = i / stride;
    return vec3<u32>(rest / n, rest % n, i % stride);
}

// Where point k of p's transform (p from axis_point) sits in a (batch, n, stride) array.
fn axis_at(p: vec3<u32>, k: u32, n: u32, stride: u32) -> u32 {
    return (p.x * n + k) * stride + p.z;
}
