// GroupNorm, pass 1: per-chunk statistics. Each (sample, group) is one contiguous run of
// group_size elements in NCHW; it is cut into chunks of `chunk` elements, one per workgroup,
// so even 32 groups of a 512x512 image spread over thousands of workgroups. Each chunk
// gets (count, mean, M2) from two passes over its elements (the second hits cache), which
// stays accurate where a one-pass sum of squares would cancel. Means are kept relative to the
// group's first element x0 (partial mean = mean - x0), so a large common offset costs no
// digits in float32. group_norm_apply.wgsl merges the chunks with Chan et al.'s update.
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

var<workgroup> red: array<f32, WG>;

fn workgroup_sum(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

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
    // vec4<T>(x[i]) splats a scalar (W = 1) and is x[i] itself for W = 4: `lanes` counts
    // the splat once
    let lanes = select(vec4<f32>(1.0, 0.0, 0.0, 0.0), vec4<f32>(1.0), W == 4u);
    let shift = f32(vec4<T>(x[group * params.group_size / W]).x);
    var s = 0.0;
    for (var i = (begin / W) + lid; i < end / W; i += WG) {
        s += dot(vec4<f32>(vec4<T>(x[i])) - shift, lanes);
    }
    let count = f32(end - begin);
    let delta = workgroup_sum(s, lid) / count;
    var q = 0.0;
    for (var i = (begin / W) + lid; i < end / W; i += WG) {
        let d = (vec4<f32>(vec4<T>(x[i])) - shift) - delta;
        q += dot(d * d, lanes);
    }
    let m2 = workgroup_sum(q, lid);
    if (lid == 0u) {
        partial[3u * c] = count;
        partial[3u * c + 1u] = delta;
        partial[3u * c + 2u] = m2;
    }
}
