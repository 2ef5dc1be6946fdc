// Row reductions for shaders/nn/attention.wgsl by subgroup shuffles: the CS invocations
// sharing rows 4rs..4rs+3 are consecutive lanes of one subgroup (the host picks this file
// only when CS is a power of two no larger than the adapter's smallest subgroup), so a
// butterfly of xor shuffles leaves every lane with the result, without a barrier. The
// butterfly is spelled out (CS <= 32): a loop around shuffles compiled poorly on NVIDIA.
fn reduce_max(x: vec4<f32>, rs: u32, cs: u32) -> vec4<f32> {
    var m = x;
    if (CS > 1u) { m = max(m, subgroupShuffleXor(m, 1u)); }
    if (CS > 2u) { m = max(m, subgroupShuffleXor(m, 2u)); }
    if (CS > 4u) { m = max(m, subgroupShuffleXor(m, 4u)); }
    if (CS > 8u) { m = max(m, subgroupShuffleXor(m, 8u)); }
    if (CS > 16u) { m = max(m, subgroupShuffleXor(m, 16u)); }
    return m;
}

fn reduce_sum(x: vec4<f32>, rs: u32, cs: u32) -> vec4<f32> {
    var m = x;
    if (CS > 1u) { m += subgroupShuffleXor(m, 1u); }
    if (CS > 2u) { m += subgroupShuffleXor(m, 2u); }
    if (CS > 4u) { m += subgroupShuffleXor(m, 4u); }
    if (CS > 8u) { m += subgroupShuffleXor(m, 8u); }
    if (CS > 16u) { m += subgroupShuffleXor(m, 16u); }
    return m;
}
