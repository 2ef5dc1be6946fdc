// Stream compaction after a scan (see scan.wgsl): the positions of the nonzero flags, in
// order. `ends` is the inclusive scan of the 0/1 `flags`, so flag i, when set, is the
// ends[i]-th one: out[ends[i] - 1] = i. numpy's flatnonzero, and the index list behind
// reading or writing through a boolean mask.
override WG: u32 = 256u;

struct Params { n: u32 }

@group(0) @binding(0) var<storage, read> flags: array<u32>;
@group(0) @binding(1) var<storage, read> ends: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<i32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i < params.n && flags[i] != 0u) {
        out[ends[i] - 1u] = i32(i);
    }
}
