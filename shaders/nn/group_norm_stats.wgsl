//! parts: nn/group_norm_moments
// GroupNorm, pass 1: per-chunk statistics. Each (sample, group) is one contiguous run of
// group_size elements in NCHW; it is cut into chunks of `chunk` elements, one per workgroup,
// so even 32 groups of a 512x512 image spread over thousands of workgroups. Each chunk's
// (count, mean - x0, M2) comes from group_norm_moments.wgsl; group_norm_apply.wgsl merges
// the chunks with Chan et al.'s update.
// W = 4 (V = vec4<T>) reads four elements a load where every chunk and group starts at a
// multiple of 4: one scalar load a lane left each lane waiting on a chain of short loads.
alias T = f32;
alias V = vec4<T>;
override WG: u32 = 256u;
override W: u32 = 4u;

struct Params { group_size: u32, chunk: u32, chunks: u32, total_chunks: u32 }

@group(0) @binding(0) var<storage, read> x: array<V>;
@group(0) @binding(1) var<storage, read_write> partial: array<f32>;  // (count, mean - x0, M2)
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let c = wid.y * nwg.x + wid.x;
    if (c >= params.total_chunks) {
        return;  // uniform per workgroup: barriers below are never split
    }
    let group = c / params.chunks;
    let begin = group * params.group_size + (c % params.chunks) * params.chunk;
    let end = min(begin + params.chunk, (group + 1u) * params.group_size);
    let shift = f32(vec4<T>(x[group * params.group_size / W]).x);
    let m = chunk_moments(begin, end, shift, lid);
    if (lid == 0u) {
        partial[3u * c] = m.x;
        partial[3u * c + 1u] = m.y;
        partial[3u * c + 2u] = m.z;
    }
}
