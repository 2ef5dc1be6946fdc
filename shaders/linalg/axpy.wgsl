// BLAS axpy, in place: y[i] = alpha * x[i] + y[i] (f32 arithmetic for f16 storage too).
alias T = f32;
override WG: u32 = 256u;

struct Params { n: u32, alpha: f32 }

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i < params.n) {
        y[i] = T(fma(params.alpha, f32(x[i]), f32(y[i])));
    }
}
