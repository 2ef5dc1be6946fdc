// One input of a concatenation: x viewed as [outer, inner] lands in out viewed as
// [outer, out_inner] at column `offset` (inner = the input's extent along the axis times
// everything after it). One invocation per input element; one dispatch per input.
alias T = f32;
override WG: u32 = 256u;

struct Params { n: u32, inner: u32, out_inner: u32, offset: u32 }

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i < params.n) {
        out[(i / params.inner) * params.out_inner + params.offset + i % params.inner] = x[i];
    }
}
