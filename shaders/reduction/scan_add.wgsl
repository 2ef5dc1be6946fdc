// Second half of a multi-block scan (see scan.wgsl): adds to every element of block b > 0
// of a column the inclusive scan of that column's block totals up to block b - 1.
alias T = f32;
alias Acc = f32;
override WG: u32 = 256u;

struct Params { n: u32, len: u32, inner: u32, blocks: u32, block_len: u32 }

@group(0) @binding(0) var<storage, read> offsets: array<Acc>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let j = (wid.y * nwg.x + wid.x) * WG + lid;
    if (j >= params.n) {
        return;
    }
    let b = ((j / params.inner) % params.len) / params.block_len;
    if (b > 0u) {
        let column = (j / (params.len * params.inner)) * params.inner + j % params.inner;
        out[j] = T(Acc(out[j]) + offsets[column * params.blocks + b - 1u]);
    }
}
