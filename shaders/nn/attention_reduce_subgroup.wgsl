// Row reductions for shaders/nn/attention.wgsl by subgroup shuffles: the CS invocations
// sharing rows 4rs..4rs+3 are consecutive lanes of one subgroup (the host picks this file
// only when CS is a power of two no larger than the adapter's smallest subgroup), so a
// butterfly of xor shuffles leaves every lane with the result, without a barrier.
fn reduce_max(x: vec4<f32>, rs: u32, cs: u32) -> vec4<f32> {
    var m = x;
    for (var o = 1u; o < CS; o *= 2u) { m = max(m, subgroupShuffleXor(m, o)); }
    return m;
}

fn reduce_sum(x: vec4<f32>, rs: u32, cs: u32) -> vec4<f32> {
    var m = x;
    for (var o = 1u; o < CS; o *= 2u) { m += subgroupShuffleXor(m, o); }
    return m;
}
