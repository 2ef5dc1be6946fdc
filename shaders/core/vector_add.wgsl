// out[i] = a[i] + b[i]. One invocation per element; the grid may be folded into y when it
// needs more than 65535 workgroups, so the linear index includes wid.y.
alias T = f32;
override WG: u32 = 256u;

struct Params { n: u32 }

@group(0) @binding(0) var<storage, read> a: array<T>;
@group(0) @binding(1) var<storage, read> b: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i < params.n) {
        out[i] = a[i] + b[i];
    }
}
