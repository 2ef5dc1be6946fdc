//! parts: nn/group_norm_merge + nn/group_norm_moments
// GroupNorm, pass 2: merge the group's chunk statistics (group_norm_merge.wgsl) and
// normalize this workgroup's chunk; with STATS (groups of one chunk) the workgroup takes its
// group's statistics itself (group_norm_moments.wgsl: the bits pass 1 would have written),
// one dispatch instead of two:
// y = ((x - x0) - mean) / sqrt(var + eps) * gamma[c] + beta[c], then SiLU
// when fused (the UNet's GroupNorm -> SiLU pairs save a full read and write).
// W = 4 (V = vec4<T>) reads four elements a load, all of one channel (hw a multiple of 4),
// as group_norm_stats.wgsl does.
alias T = f32;
alias V = vec4<T>;
override WG: u32 = 256u;
override W: u32 = 4u;
override AFFINE: bool = true;
override SILU: bool = false;
override STATS: bool = false;

struct Params {
    group_size: u32, chunk: u32, chunks: u32, total_chunks: u32,
    hw: u32, channels: u32, eps: f32,
}

@group(0) @binding(0) var<storage, read> x: array<V>;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<T>;
@group(0) @binding(3) var<storage, read> beta: array<T>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let c = wid.y * nwg.x + wid.x;
    if (c >= params.total_chunks) {
        return;
    }
    let group = c / params.chunks;
    let shift = f32(vec4<T>(x[group * params.group_size / W]).x);
    var total: vec3<f32>;
    if (STATS) {
        total = chunk_moments(group * params.group_size, (group + 1u) * params.group_size, shift,
                              lid);
    } else {
        total = group_moments(group, c, lid);
    }
    let mean = total.y;
    let rstd = inverseSqrt(total.z / total.x + params.eps);
    let begin = group * params.group_size + (c % params.chunks) * params.chunk;
    let end = min(begin + params.chunk, (group + 1u) * params.group_size);
    for (var i = (begin / W) + lid; i < end / W; i += WG) {
        let at = i * W;
        var y = ((vec4<f32>(vec4<T>(x[i])) - shift) - mean) * rstd;
        if (AFFINE) {
            let ch = (at / params.hw) % params.channels;
            y = fma(y, vec4<f32>(f32(gamma[ch])), vec4<f32>(f32(beta[ch])));
        }
        if (SILU) {
            y = y / (1.0 + exp(-y));
        }
        out[at] = T(y.x);
        if (W == 4u) {
            out[at + 1u] = T(y.y);
            out[at + 2u] = T(y.z);
            out[at + 3u] = T(y.w);
        }
    }
}
