// Nearest-neighbour 2x upsampling of NCHW planes: out[p, oh, ow] = x[p, oh / 2, ow / 2],
// one invocation per output element (p = n * C + c).
alias T = f32;
override WG: u32 = 256u;

struct Params { n: u32, h: u32, w: u32 }  // n = output elements; h, w = input size

@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i < params.n) {
        let wo = 2u * params.w;
        let plane = i / (4u * params.h * params.w);
        let r = i % (4u * params.h * params.w);
        out[i] = x[(plane * params.h + (r / wo) / 2u) * params.w + (r % wo) / 2u];
    }
}
