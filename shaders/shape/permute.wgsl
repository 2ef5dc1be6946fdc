// out = x.transpose(axes) for up to 6 dims. The host passes, per output dim d (innermost
// first), the output extent and the input stride that dim walks; each invocation decodes its
// output index into coordinates and gathers. Writes are coalesced; reads are strided.
alias T = f32;
override WG: u32 = 256u;

struct Params {
    n: u32, rank: u32,
    e0: u32, e1: u32, e2: u32, e3: u32, e4: u32, e5: u32,
    s0: u32, s1: u32, s2: u32, s3: u32, s4: u32, s5: u32,
}

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= params.n) {
        return;
    }
    let extent = array<u32, 6>(params.e0, params.e1, params.e2, params.e3, params.e4, params.e5);
    let stride = array<u32, 6>(params.s0, params.s1, params.s2, params.s3, params.s4, params.s5);
    var rest = i;
    var src = 0u;
    for (var d = 0u; d < params.rank; d++) {
        src += (rest % extent[d]) * stride[d];
        rest /= extent[d];
    }
    out[i] = x[src];
}
