// The last step of softmax along a strided axis: x is (outer, len, inner), peak and total
// are (outer, inner) from reduce.wgsl (the max, and sum(exp(x - max))).
alias T = f32;
override WG: u32 = 256u;
override LOG: bool = false;

struct Params { n: u32, len: u32, inner: u32 }

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> peak: array<f32>;
@group(0) @binding(2) var<storage, read> total: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let j = (wid.y * nwg.x + wid.x) * WG + lid;
    if (j >= params.n) {
        return;
    }
    let column = (j / (params.len * params.inner)) * params.inner + j % params.inner;
    let d = f32(x[j]) - peak[column];
    if (LOG) {
        out[j] = T(d - log(total[column]));
    } else {
        out[j] = T(exp(d) / total[column]);
    }
}
