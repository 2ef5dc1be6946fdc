// In-place per-channel bias of an NCHW tensor: out[i] += bias[(i / hw) % c]. Finishes
// convolutions computed by a GEMM whose epilogue only adds a bias along rows' columns.
alias T = f32;
override WG: u32 = 256u;

struct Params { n: u32, hw: u32, c: u32 }

@group(0) @binding(0) var<storage, read> bias: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i < params.n) {
        out[i] = T(f32(out[i]) + f32(bias[(i / params.hw) % params.c]));
    }
}
