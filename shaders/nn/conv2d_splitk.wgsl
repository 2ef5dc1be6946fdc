// Finishes a split-K conv2d: out[i] = sum over SPLITS f32 slabs of partial[s * n + i], plus
// the bias of i's channel (NCHW, so the channel is (i / hw) % c_out), plus with ADD 1 the
// residual addend[i], with ADD 2 the per-(image, channel) addend[i / hw].
alias T = f32;
override WG: u32 = 256u;
override HAS_BIAS: bool = true;
override ADD: u32 = 0u;

struct Params { n: u32, hw: u32, c_out: u32, splits: u32 }

@group(0) @binding(0) var<storage, read> partial: array<f32>;
@group(0) @binding(1) var<storage, read> bias: array<T>;
@group(0) @binding(2) var<storage, read> addend: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= params.n) {
        return;
    }
    var sum = 0.0;
    if (HAS_BIAS) {
        sum = f32(bias[(i / params.hw) % params.c_out]);
    }
    for (var s = 0u; s < params.splits; s++) {
        sum += partial[s * params.n + i];
    }
    if (ADD == 1u) {
        sum += f32(addend[i]);
    } else if (ADD == 2u) {
        sum += f32(addend[i / params.hw]);
    }
    out[i] = T(sum);
}
