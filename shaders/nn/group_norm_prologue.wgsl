//! parts: nn/group_norm_merge
// GroupNorm folded into the next conv's input (gpustd/nn/prologue.py): one workgroup per
// (sample, group) merges the group's chunk statistics (group_norm_merge.wgsl, the same bits
// as group_norm_apply.wgsl) and writes, per channel c of the group, the conv's table entry
// (x0, scale, shift) with scale = gamma[c] / sqrt(var + eps), shift = beta[c] - mean * scale
// (mean relative to the group's first element x0, so a large common offset costs no
// digits): the conv reads y = (x - x0) * scale + shift = GroupNorm(x), and no normalized
// tensor is ever written.
alias T = f32;
alias V = vec4<T>;  // as group_norm_stats.wgsl reads x
override WG: u32 = 256u;
override W: u32 = 4u;
override AFFINE: bool = true;

struct Params {
    group_size: u32, chunk: u32, chunks: u32, total_chunks: u32,
    per_group: u32, channels: u32, eps: f32,
}

@group(0) @binding(0) var<storage, read> x: array<V>;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<T>;
@group(0) @binding(3) var<storage, read> beta: array<T>;
@group(0) @binding(4) var<storage, read_write> table: array<vec4<f32>>;  // [N * C]
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let group = wid.y * nwg.x + wid.x;  // sample * groups + group
    if (group * params.chunks >= params.total_chunks) {
        return;  // uniform per workgroup: the merge's barriers are never split
    }
    let total = group_moments(group, group * params.chunks, lid);
    let x0 = f32(vec4<T>(x[group * params.group_size / W]).x);
    let rstd = inverseSqrt(total.z / total.x + params.eps);
    for (var j = lid; j < params.per_group; j += WG) {
        let row = group * params.per_group + j;  // sample * channels + channel
        var scale = rstd;
        var shift = 0.0;
        if (AFFINE) {
            let ch = row % params.channels;
            scale = rstd * f32(gamma[ch]);
            shift = f32(beta[ch]);
        }
        table[row] = vec4<f32>(x0, scale, fma(-total.y, scale, shift), 0.0);
    }
}
