// Finishes a split-K GEMM (gemm.wgsl with SPLIT): c[i] = alpha * (sum over splits of the f32
// slabs partial[s * total + i]) + beta * c[i] + bias[i % n] (has_bias 1) or the row's
// bias[(i / n) % m] (has_bias 2). beta = 0 never reads c.
alias T = f32;
override WG: u32 = 256u;

struct Params { total: u32, n: u32, splits: u32, alpha: f32, beta: f32, has_bias: u32, m: u32 }

@group(0) @binding(0) var<storage, read> partial: array<f32>;
@group(0) @binding(1) var<storage, read> bias: array<T>;
@group(0) @binding(2) var<storage, read_write> c: array<T>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= params.total) {
        return;
    }
    var sum = 0.0;
    for (var s = 0u; s < params.splits; s++) {
        sum += partial[s * params.total + i];
    }
    var value = params.alpha * sum;
    if (params.beta != 0.0) {
        value += params.beta * f32(c[i]);
    }
    if (params.has_bias == 1u) {
        value += f32(bias[i % params.n]);
    }
    if (params.has_bias == 2u) {
        value += f32(bias[(i / params.n) % params.m]);
    }
    c[i] = T(value);
}
