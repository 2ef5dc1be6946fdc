// Table lookup: out[i, j] = table[ids[i], j]; rows of ids outside [0, vocab) read as 0
// (a shader cannot raise; the host checks ids it can see).
alias T = f32;
override WG: u32 = 256u;

struct Params { n: u32, d: u32, vocab: u32 }

@group(0) @binding(0) var<storage, read> ids: array<i32>;
@group(0) @binding(1) var<storage, read> table: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i < params.n) {
        let id = ids[i / params.d];
        var v = T(0.0);
        if (id >= 0 && u32(id) < params.vocab) {
            v = table[u32(id) * params.d + i % params.d];
        }
        out[i] = v;
    }
}
