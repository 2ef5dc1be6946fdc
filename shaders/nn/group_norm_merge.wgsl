// GroupNorm's chunk statistics merged into one group's (appended through the `//! parts:`
// line of group_norm_apply.wgsl and group_norm_prologue.wgsl): Chan et al. 1979's pairwise
// update, n = na + nb, mean = ma + d*nb/n, M2 = M2a + M2b + d^2*na*nb/n (means relative to
// the group's first element x0). The caller declares `partial` (group_norm_stats.wgsl's
// (count, mean - x0, M2) per chunk), `params.chunks` and WG. Every invocation of the
// workgroup merges in the same fixed order, so both kernels get the same bits.
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

// (count, mean - x0, M2) of `group`, whose chunks are partial[group * chunks ...]; `own`
// is one of them (used as it is when the group has one chunk).
fn group_moments(group: u32, own: u32, lid: u32) -> vec3<f32> {
    var total = vec3<f32>(partial[3u * own], partial[3u * own + 1u], partial[3u * own + 2u]);
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
    return total;
}
