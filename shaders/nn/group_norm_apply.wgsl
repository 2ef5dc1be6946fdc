// GroupNorm, pass 2: merge the group's chunk statistics (Chan et al. 1979 pairwise update:
// n = na + nb, mean = ma + d*nb/n, M2 = M2a + M2b + d^2*na*nb/n; means are relative to the
// group's first element x0) and normalize this workgroup's chunk:
// y = ((x - x0) - mean) / sqrt(var + eps) * gamma[c] + beta[c], then SiLU
// when fused (the UNet's GroupNorm -> SiLU pairs save a full read and write).
alias T = f32;
override WG: u32 = 256u;
override AFFINE: bool = true;
override SILU: bool = false;

struct Params {
    group_size: u32, chunk: u32, chunks: u32, total_chunks: u32,
    hw: u32, channels: u32, eps: f32,
}

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<T>;
@group(0) @binding(3) var<storage, read> beta: array<T>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;
@group(0) @binding(5) var<uniform> params: Params;

var<workgroup> red_n: array<f32, WG>;
var<workgroup> red_mean: array<f32, WG>;
var<workgroup> red_m2: array<f32, WG>;

fn merge(a: vec3<f32>, b: vec3<f32>) -> vec3<f32> {
    let n = a.x + b.x;
    if (n == 0.0) {
        return a;
    }
    let d = b.y - a.y;
    return vec3<f32>(n, a.y + d * (b.x / n), a.z + b.z + d * d * (a.x * b.x / n));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let c = wid.y * nwg.x + wid.x;
    if (c >= params.total_chunks) {
        return;
    }
    let group = c / params.chunks;
    var total = vec3<f32>(partial[3u * c], partial[3u * c + 1u], partial[3u * c + 2u]);
    if (params.chunks > 1u) {  // uniform: one chunk is its group's statistics as they are
        var s = vec3<f32>(0.0);
        for (var j = lid; j < params.chunks; j += WG) {
            let p = 3u * (group * params.chunks + j);
            s = merge(s, vec3<f32>(partial[p], partial[p + 1u], partial[p + 2u]));
        }
        red_n[lid] = s.x;
        red_mean[lid] = s.y;
        red_m2[lid] = s.z;
        workgroupBarrier();
        for (var step = WG / 2u; step > 0u; step >>= 1u) {
            if (lid < step) {
                let m = merge(vec3<f32>(red_n[lid], red_mean[lid], red_m2[lid]),
                              vec3<f32>(red_n[lid + step], red_mean[lid + step],
                                        red_m2[lid + step]));
                red_n[lid] = m.x;
                red_mean[lid] = m.y;
                red_m2[lid] = m.z;
            }
            workgroupBarrier();
        }
        total = vec3<f32>(red_n[0], red_mean[0], red_m2[0]);
    }
    let shift = f32(x[group * params.group_size]);
    let mean = total.y;
    let rstd = inverseSqrt(total.z / total.x + params.eps);
    let begin = group * params.group_size + (c % params.chunks) * params.chunk;
    let end = min(begin + params.chunk, (group + 1u) * params.group_size);
    for (var i = begin + lid; i < end; i += WG) {
        var y = ((f32(x[i]) - shift) - mean) * rstd;
        if (AFFINE) {
            let ch = (i / params.hw) % params.channels;
            y = fma(y, f32(gamma[ch]), f32(beta[ch]));
        }
        if (SILU) {
            y = y / (1.0 + exp(-y));
        }
        out[i] = T(y);
    }
}
