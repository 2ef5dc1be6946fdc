// out[i] = Dst(x[i]): element-type conversion (e.g. f32 <-> f16). Src/Dst are rebound by
// Kernel(types=...), the one place WGSL cannot express the specialization itself.
alias Src = f32;
alias Dst = f32;
override WG: u32 = 256u;

struct Params { n: u32 }

@group(0) @binding(0) var<storage, read> x: array<Src>;
@group(0) @binding(1) var<storage, read_write> out: array<Dst>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i < params.n) {
        out[i] = Dst(x[i]);
    }
}
